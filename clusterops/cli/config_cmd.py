from __future__ import annotations

import typer

from clusterops.cli.common import JSON_OPTION, console, get_config, print_json

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Print the effective configuration (secrets redacted) and the files it came from."""
    cfg = get_config(ctx)
    data = cfg.to_dict(redact=True)
    if as_json:
        print_json({"sources": cfg.sources, "config": data})
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]sources:[/] {', '.join(cfg.sources) or '(defaults only)'}")
    for section, values in data.items():
        table = Table(title=f"[{section}]", title_justify="left", show_header=False, box=None)
        for key, value in values.items():
            table.add_row(f"  {key}", repr(value))
        out.print(table)


@app.command("check")
def check(ctx: typer.Context) -> None:
    """Load the configuration and exit 0 if it is valid (errors name the key and the file)."""
    cfg = get_config(ctx)
    console().print(f"ok: {', '.join(cfg.sources) or '(defaults only)'}")
