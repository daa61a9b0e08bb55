"""Writes tests/fixtures/nodes/: a healthy p5.48xlarge (8x H100, 32 EFA) and one fixture per failure.

The healthy node follows the layout of a real one: NVML answers keyed by pynvml call, the EFA sysfs
tree (/sys/class/infiniband/rdmapNs0/{device,hw_counters,ports/1/hw_counters}), /proc/mdstat with the
8-NVMe RAID 0, /proc/self/mounts, /proc/meminfo. Each failure is a small patch over it (`base`), so the
difference is the whole story of the fixture. Names: healthy* -> verdict 0, warn* -> 1, others -> 2.

    .venv/bin/python tests/health/make_fixtures.py     # rewrites the directory
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"
FORMAT = "clusterops-node-fixture/1"
NOW = 1764300000.0  # 2025-11-28T03:20:00Z
GPU_BUSES = ["53", "64", "75", "86", "97", "a8", "b9", "ca"]
EFA = [(f"rdmap{0x10 + i}s0", f"0000:{0x10 + i:02x}:00.0") for i in range(32)]
IB = "/sys/class/infiniband"
DEVICE_COUNTERS = [
    "submitted_cmds",
    "completed_cmds",
    "cmds_err",
    "no_completion_cmds",
    "keep_alive_rcvd",
    "alloc_pd_err",
    "create_qp_err",
    "create_cq_err",
    "reg_mr_err",
    "alloc_ucontext_err",
    "create_ah_err",
    "mmap_err",
]
PORT_COUNTERS = [
    "tx_bytes",
    "tx_pkts",
    "rx_bytes",
    "rx_pkts",
    "rx_drops",
    "send_bytes",
    "send_wrs",
    "recv_bytes",
    "recv_wrs",
    "rdma_read_wrs",
    "rdma_read_bytes",
    "rdma_read_wr_err",
    "rdma_read_resp_bytes",
    "rdma_write_wrs",
    "rdma_write_bytes",
    "rdma_write_wr_err",
    "rdma_write_recv_bytes",
    "retrans_bytes",
    "retrans_pkts",
    "retrans_timeout_events",
    "unresponsive_remote_events",
    "impaired_remote_conn_events",
]
GIB = 1024**3
MOUNTS = """\
/dev/nvme0n1p1 / ext4 rw,relatime,discard,errors=remount-ro 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
devtmpfs /dev devtmpfs rw,nosuid,size=1056759416k,nr_inodes=264189854,mode=755 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=211351568k,mode=755 0 0
/dev/md0 /scratch xfs {scratch},noatime,attr2,inode64,logbufs=8,logbsize=32k,sunit=1024,swidth=8192 0 0
"""
MDSTAT = """\
Personalities : [raid0]
md0 : active raid0 nvme8n1[7] nvme7n1[6] nvme6n1[5] nvme5n1[4] nvme4n1[3] nvme3n1[2] nvme2n1[1] nvme1n1[0]
      30004846592 blocks super 1.2 512k chunks

unused devices: <none>
"""


def counter_value(dev_index: int, name: str) -> int:
    if name.endswith("_err") or name in (
        "rx_drops",
        "no_completion_cmds",
        "retrans_timeout_events",
        "unresponsive_remote_events",
        "impaired_remote_conn_events",
    ):
        return 0
    return 1_000_003 * (dev_index + 1) + 7919 * len(name)


def gpu(i: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "nvmlDeviceGetHandleByIndex": None,
        "nvmlDeviceGetName": "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUUID": f"GPU-3f0c{i:04x}-7a2e-4d6b-9c1f-5b8a2e6d{i:04x}",
        "nvmlDeviceGetSerial": f"165232400{1230 + i}",
        "nvmlDeviceGetVbiosVersion": "96.00.99.00.01",
        "nvmlDeviceGetPciInfo": {"busId": f"00000000:{GPU_BUSES[i].upper()}:00.0"},
        "nvmlDeviceGetPersistenceMode": 1,
        "nvmlDeviceGetTotalEccErrors(1,0)": 0,
        "nvmlDeviceGetTotalEccErrors(1,1)": 0,
        # Hopper remaps rows; page retirement is not supported there.
        "nvmlDeviceGetRetiredPagesPendingStatus": {"$error": "NVML_ERROR_NOT_SUPPORTED"},
        "nvmlDeviceGetRemappedRows": [0, 0, 0, 0],
        "nvmlDeviceGetTemperature(0)": 33 + i % 3,
        "nvmlDeviceGetTemperatureThreshold(1)": 87,
        "nvmlDeviceGetCurrentClocksEventReasons": 1,  # GPU idle
        # An idle H100 drops its link to gen1; width stays x16.
        "nvmlDeviceGetCurrPcieLinkGeneration": 1,
        "nvmlDeviceGetMaxPcieLinkGeneration": 5,
        "nvmlDeviceGetCurrPcieLinkWidth": 16,
        "nvmlDeviceGetMaxPcieLinkWidth": 16,
        "nvmlDeviceGetFieldValues(38,45,52,59)": [0, 0, 0, 0],
        "nvmlDeviceGetGpuFabricInfoV": {"state": 3, "status": 0},
    }
    for link in range(18):
        d[f"nvmlDeviceGetNvLinkState({link})"] = 1
    return d


def healthy() -> dict[str, Any]:
    files: dict[str, str] = {
        "/proc/sys/kernel/random/boot_id": "8b1e6f3a-2c4d-4e5f-9a0b-1c2d3e4f5a6b\n",
        "/proc/self/mounts": MOUNTS.format(scratch="rw"),
        "/proc/mdstat": MDSTAT,
        "/proc/meminfo": "MemTotal:       2113393496 kB\nMemFree:        2071532100 kB\n"
        "MemAvailable:   2080194800 kB\nBuffers:          123456 kB\n",
        "/proc/loadavg": "0.52 0.41 0.37 2/3187 48211\n",
        "/sys/devices/virtual/dmi/id/product_name": "p5.48xlarge\n",
    }
    exists = {}
    efa_state = {}
    for n, (name, pci) in enumerate(EFA):
        base = f"{IB}/{name}"
        files[f"{base}/device/vendor"] = "0x1d0f\n"
        files[f"{base}/device/device"] = "0xefa2\n"
        files[f"{base}/device/uevent"] = (
            f"DRIVER=efa\nPCI_CLASS=20000\nPCI_ID=1D0F:EFA2\nPCI_SLOT_NAME={pci}\n"
        )
        files[f"{base}/device/infiniband_verbs/uverbs{n}/dev"] = f"231:{192 + n}\n"
        files[f"{base}/ports/1/state"] = "4: ACTIVE\n"  # hard-wired on EFA: never read by the checks
        values = {}
        for c in DEVICE_COUNTERS:
            files[f"{base}/hw_counters/{c}"] = f"{counter_value(n, c)}\n"
            values[c] = counter_value(n, c)
        for c in PORT_COUNTERS:
            files[f"{base}/ports/1/hw_counters/{c}"] = f"{counter_value(n, c)}\n"
            values[c] = counter_value(n, c)
        exists[f"/dev/infiniband/uverbs{n}"] = True
        efa_state[name] = {"checkpoints": [{"ts": NOW - 1800, "v": values}]}
    nvlink_state = {
        gpu(i)["nvmlDeviceGetUUID"]: {
            "checkpoints": [
                {"ts": NOW - 1800, "v": {"crc_flit": 0, "crc_data": 0, "replay": 0, "recovery": 0}}
            ]
        }
        for i in range(8)
    }
    return {
        "format": FORMAT,
        "description": "healthy p5.48xlarge: 8x H100 80GB idle, 32 EFA, md0 RAID 0 on 8 NVMe at /scratch",
        "now": NOW,
        "nvml": {
            "system": {"nvmlSystemGetDriverVersion": "550.127.08"},
            "count": 8,
            "devices": {str(i): gpu(i) for i in range(8)},
        },
        "files": files,
        "exists": exists,
        "statvfs": {
            "/scratch": {"total": 28 * 1024 * GIB, "avail": 27 * 1024 * GIB},
            "/tmp": {"total": 1800 * GIB, "avail": 1650 * GIB},
        },
        "writable": {"/scratch": "", "/tmp": ""},
        "kernel_log": [],
        "blocked_processes": [],
        "memlock": -1,
        "cpu_count": 192,
        "state": {"efa": {"devices": efa_state}, "gpu": {"nvlink": nvlink_state}},
    }


def dev(i: int, **calls: Any) -> dict[str, Any]:
    return {"nvml": {"devices": {str(i): calls}}}


def xid_line(seq: int, age_s: float, code: int, bus: str, text: str) -> dict[str, Any]:
    return {"seq": seq, "ts": NOW - age_s, "msg": f"NVRM: Xid (PCI:0000:{bus}:00): {code}, {text}"}


def efa_counter(n: int, name: str, rise: int, port: bool = True) -> dict[str, Any]:
    dev_name = EFA[n][0]
    path = f"{IB}/{dev_name}/{'ports/1/' if port else ''}hw_counters/{name}"
    return {"files": {path: f"{counter_value(n, name) + rise}\n"}}


def blocked(n: int) -> list[dict[str, Any]]:
    return [
        {"pid": 7100 + k, "comm": "python", "start": 5_000_000 + k, "wchan": "nfs_wait_bit_killable"}
        for k in range(n)
    ]


# name -> (what it shows, patch over healthy_p5.json)
FAILURES: dict[str, tuple[str, dict[str, Any]]] = {
    "healthy_p5_old_and_app_xids": (
        "a critical XID 2 days old (outside the window) and an application XID 13 10 min ago: passes",
        {
            "kernel_log": [
                xid_line(1201, 2 * 86400, 48, "53", "pid=812, DBE (0x1) ..."),
                xid_line(9344, 600, 13, "64", "Graphics SM Warp Exception"),
            ]
        },
    ),
    "warn_persistence_off": ("GPU 0 has persistence mode off", dev(0, nvmlDeviceGetPersistenceMode=0)),
    "warn_sw_thermal": (
        "GPU 4 busy and held down by SW thermal slowdown",
        dev(
            4,
            **{
                "nvmlDeviceGetCurrentClocksEventReasons": 0x20,
                "nvmlDeviceGetTemperature(0)": 78,
                "nvmlDeviceGetCurrPcieLinkGeneration": 5,
            },
        ),
    ),
    "warn_temp_near_slowdown": (
        "GPU 2 at 84 C, 3 C from its slowdown threshold",
        dev(
            2,
            **{
                "nvmlDeviceGetTemperature(0)": 84,
                "nvmlDeviceGetCurrentClocksEventReasons": 0,
                "nvmlDeviceGetCurrPcieLinkGeneration": 5,
            },
        ),
    ),
    "warn_ecc_aggregate": (
        "GPU 6 had one uncorrectable ECC error in its life (remapped since)",
        dev(6, **{"nvmlDeviceGetTotalEccErrors(1,1)": 1, "nvmlDeviceGetRemappedRows": [0, 1, 0, 0]}),
    ),
    "warn_efa_remote_events": (
        "rdmap20s0 saw peers go unresponsive (a remote problem: warn, never drain)",
        efa_counter(4, "unresponsive_remote_events", 12),
    ),
    "warn_xid_unlisted": (
        "an XID code not in either list: look at it",
        {"kernel_log": [xid_line(9400, 120, 150, "75", "unrecognised event")]},
    ),
    "gpu_count_7": ("NVML sees 7 of 8 GPUs", {"nvml": {"count": 7, "devices": {"7": None}}}),
    "nvml_unreachable": (
        "NVML cannot initialise: driver not loaded",
        {"nvml": {"init_error": "NVML_ERROR_DRIVER_NOT_LOADED"}},
    ),
    "gpu_lost": (
        "GPU 5 fell off the bus",
        dev(5, nvmlDeviceGetHandleByIndex={"$error": "NVML_ERROR_GPU_IS_LOST"}),
    ),
    "gpu_reset_required": (
        "GPU 2 requires a reset",
        dev(2, nvmlDeviceGetHandleByIndex={"$error": "NVML_ERROR_RESET_REQUIRED"}),
    ),
    "ecc_uncorrected_volatile": (
        "GPU 3 has uncorrected volatile ECC errors",
        dev(3, **{"nvmlDeviceGetTotalEccErrors(1,0)": 2, "nvmlDeviceGetTotalEccErrors(1,1)": 2}),
    ),
    "retired_pages_pending": (
        "GPU 1 has retired pages pending (a pre-Hopper GPU would say so)",
        dev(1, nvmlDeviceGetRetiredPagesPendingStatus=1),
    ),
    "row_remap_pending": ("GPU 3 has a row remap pending", dev(3, nvmlDeviceGetRemappedRows=[0, 1, 1, 0])),
    "row_remap_failed": ("GPU 6 ran out of spare rows", dev(6, nvmlDeviceGetRemappedRows=[0, 512, 0, 1])),
    "temp_over_slowdown": (
        "GPU 0 at 90 C, over its 87 C slowdown threshold",
        dev(
            0,
            **{
                "nvmlDeviceGetTemperature(0)": 90,
                "nvmlDeviceGetCurrentClocksEventReasons": 0x20,
                "nvmlDeviceGetCurrPcieLinkGeneration": 5,
            },
        ),
    ),
    "clocks_hw_slowdown": (
        "GPU 1 held down by HW slowdown",
        dev(1, **{"nvmlDeviceGetCurrentClocksEventReasons": 0x8, "nvmlDeviceGetCurrPcieLinkGeneration": 5}),
    ),
    "clocks_power_brake": (
        "GPU 7 held down by HW power brake",
        dev(
            7,
            **{
                "nvmlDeviceGetCurrentClocksEventReasons": 0x80 | 0x8,
                "nvmlDeviceGetCurrPcieLinkGeneration": 5,
            },
        ),
    ),
    "pcie_width_degraded": ("GPU 7 link trained at x8", dev(7, nvmlDeviceGetCurrPcieLinkWidth=8)),
    "nvlink_down": (
        "GPU 2 has NVLinks 4 and 9 down",
        dev(2, **{"nvmlDeviceGetNvLinkState(4)": 0, "nvmlDeviceGetNvLinkState(9)": 0}),
    ),
    "nvlink_errors_rising": (
        "GPU 5 NVLink recovery errors rose by 25 in 30 min",
        dev(5, **{"nvmlDeviceGetFieldValues(38,45,52,59)": [0, 0, 3, 25]}),
    ),
    "fabric_not_ready": (
        "GPU 0 not registered with the NVSwitch fabric (fabric manager down)",
        dev(0, nvmlDeviceGetGpuFabricInfoV={"state": 1, "status": 0}),
    ),
    "xid_79_recent": (
        "XID 79 five minutes ago",
        {
            "kernel_log": [
                xid_line(9512, 300, 79, "97", "pid='<unknown>', name=<unknown>, GPU has fallen off the bus.")
            ]
        },
    ),
    "efa_count_31": ("one EFA device gone", {"dirs": {IB: sorted(n for n, _ in EFA if n != "rdmap31s0")}}),
    "efa_uverbs_missing": (
        "rdmap23s0 has no /dev/infiniband/uverbs7",
        {"exists": {"/dev/infiniband/uverbs7": False}},
    ),
    "efa_memlock_limited": (
        "memlock limited to 64 KiB (slurmd without LimitMEMLOCK=infinity)",
        {"memlock": 65536},
    ),
    "efa_counters_rising": (
        "rdmap17s0 retransmit timeouts rose by 5000 in 30 min",
        efa_counter(1, "retrans_timeout_events", 5000),
    ),
    "efa_admin_cmd_errors": (
        "rdmap25s0 admin commands failing (cmds_err rose)",
        efa_counter(9, "cmds_err", 3, port=False),
    ),
    "storage_mount_missing": (
        "/scratch not mounted",
        {"files": {"/proc/self/mounts": MOUNTS.split("/dev/md0")[0]}},
    ),
    "storage_readonly": (
        "/scratch remounted read-only after an I/O error",
        {
            "files": {"/proc/self/mounts": MOUNTS.format(scratch="ro")},
            "writable": {"/scratch": "EROFS: Read-only file system"},
        },
    ),
    "storage_md_failed": (
        "md0 lost a member",
        {"files": {"/proc/mdstat": MDSTAT.replace("nvme4n1[3]", "nvme4n1[3](F)")}},
    ),
    "storage_full": (
        "/scratch has 40 GiB left",
        {"statvfs": {"/scratch": {"total": 28 * 1024 * GIB, "avail": 40 * GIB}}},
    ),
    "system_dstate": (
        "5 processes stuck in D state since the last run (hung NFS)",
        {
            "blocked_processes": blocked(5),
            "state": {"system": {"dstate": {f"{p['pid']}:{p['start']}": NOW - 300 for p in blocked(5)}}},
        },
    ),
    "system_memory_missing": (
        "1500 GiB of 2 TiB visible: failed DIMMs",
        {
            "files": {
                "/proc/meminfo": "MemTotal:       1572864000 kB\nMemFree:        1500000000 kB\n"
                "MemAvailable:   1510000000 kB\n"
            }
        },
    ),
    "nvml_hang": (
        "nvmlDeviceGetRemappedRows never returns: the gpu check hangs and is killed",
        {"hang": ["nvmlDeviceGetRemappedRows"]},
    ),
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "healthy_p5.json").write_text(json.dumps(healthy(), indent=1, sort_keys=True) + "\n")
    for name, (description, patch) in FAILURES.items():
        body = {"format": FORMAT, "base": "healthy_p5.json", "description": description, **patch}
        (OUT / f"{name}.json").write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(FAILURES) + 1} fixtures to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
