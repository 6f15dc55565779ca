"""How figures are taken, the same way for every architecture: clocks and repeats (`timing`), throughput,
latency and the windows during training (`throughput`), peak memory and a steady allocator (`memory`), what
else the machine did meanwhile (`load`), parameter and FLOP counts (`counts`), the precision, memory format
and compilation a model runs in (`modes`), and generators' sample quality (`fid`).
"""
