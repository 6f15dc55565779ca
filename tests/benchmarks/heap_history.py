"""A timm model's inference under archbench's allocator settings after different heap histories, the arms
interleaved in one process (rotated per round), with the page faults of a forward: what makes archbench's
inference faster than timm's script on networks whose activations exceed 32 MiB (docs/beside-timm.md, 8).

    .venv/bin/python tests/benchmarks/heap_history.py [MODEL=mobilenetv3_large_100] [ROUNDS=3]   (~40 s for mobilenetv3)
"""
import copy, ctypes, gc, resource, statistics, sys, time
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 32 << 20); libc.mallopt(-1, 1 << 30)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD: archbench before record version 10
import torch, torch.nn.functional as F, timm

name = sys.argv[1] if len(sys.argv) > 1 else "mobilenetv3_large_100"
rounds, WARM, TIMED, B = int(sys.argv[2]) if len(sys.argv) > 2 else 3, 2, 6, 16
torch.manual_seed(0)
model = timm.create_model(name, pretrained=False, num_classes=1000, in_chans=3).eval()  # architectures/zoo.py:132-139
x_timm = torch.randn(B, 3, 224, 224)  # timm_benchmark.py:290
u = torch.rand(2 * B, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # bench/run/speed.py:63
x_arch = ((u - u.mean((0, 2, 3), keepdim=True)) / u.std((0, 2, 3), keepdim=True))[:B]  # data/images.py:73-80, memory.py:76

def ballast():  # grow the heap as a training history does: 640 MiB of 8 MiB (< 32 MiB, so brk-heap) blocks, touched, freed
    blocks = [torch.ones(2 << 20) for _ in range(80)]; del blocks

def trained():  # archbench's own history before inference: fused-SGD steps on a deep copy (tasks/loop.py:238, classify.py:27-36)
    c, y = copy.deepcopy(model).train(), torch.randint(0, 1000, (B,))
    opt = torch.optim.SGD(c.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True)
    for _ in range(2):
        opt.zero_grad(set_to_none=True); F.cross_entropy(c(x_arch), y).backward(); opt.step()
    del c, opt; gc.collect()

ARMS = {  # arm: (heap history, grad mode, input, flush denormals, M_MMAP_MAX=0)
    "fresh (=timm-steady)": (None, torch.inference_mode, x_timm, False, False),
    "ballast 640 MiB": (ballast, torch.inference_mode, x_timm, False, False),
    "after 2 train steps": (trained, torch.inference_mode, x_timm, False, False),
    "fresh, M_MMAP_MAX=0": (None, torch.inference_mode, x_timm, False, True),
    "fresh, flush denormal": (None, torch.inference_mode, x_timm, True, False),
    "fresh, no_grad": (None, torch.no_grad, x_timm, False, False),
    "fresh, archbench input": (None, torch.inference_mode, x_arch, False, False),
}
res = {arm: ([], []) for arm in ARMS}
for r in range(rounds):
    for arm in list(ARMS)[r % len(ARMS):] + list(ARMS)[:r % len(ARMS)]:
        history, grad_mode, x, ftz, no_mmap = ARMS[arm]
        gc.collect(); libc.malloc_trim(0)  # back to a small heap, as in a fresh inference-only process
        if no_mmap: libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: blocks >= 32 MiB from the heap too
        if history: history()
        torch.set_flush_denormal(ftz)
        with grad_mode():
            for _ in range(WARM): model(x)
            f0, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
            for _ in range(TIMED):
                t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / TIMED
        torch.set_flush_denormal(False); libc.mallopt(-4, 65536)
        res[arm][0].extend(times); res[arm][1].append(faults)
        print(f"round {r + 1} {arm:<24} {B / statistics.median(times):7.2f} samples/s {faults:9.0f} minor faults/forward", flush=True)
sub = [0, 0]  # subnormal activations in one eval forward (timm's input)
hook = lambda m, i, o: sub.__setitem__(slice(0, 2), [sub[0] + int(((o != 0) & (o.abs() < 1.1754944e-38)).sum()), sub[1] + o.numel()])
handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
with torch.inference_mode(): model(x_timm); [h.remove() for h in handles]
base = B / statistics.median(res["fresh (=timm-steady)"][0])
print(f"\n{name}, batch {B}, {torch.get_num_threads()} threads, {rounds} rounds; subnormal activations {sub[0]} of {sub[1]}")
for arm, (times, faults) in res.items():
    print(f"{arm:<24} {B / statistics.median(times):7.2f} samples/s  x{B / statistics.median(times) / base:5.3f}  {statistics.median(faults):9.0f} faults/forward")
