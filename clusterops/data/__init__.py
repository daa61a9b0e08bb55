"""Token shards in datatrove's layout: the reader/writer (shards.py), `data prepare` and `data inspect`."""
