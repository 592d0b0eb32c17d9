"""Benchmarking: mmseg's timing method (`timing`) and its inputs (`frames`). The machine facts a timing
depends on are `bisenet_pl.hardware.machine_info`."""
