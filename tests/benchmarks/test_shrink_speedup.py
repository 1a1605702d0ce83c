"""Tests of benchmarks/shrink_speedup.py: the activation-traffic bound in closed form."""

from script_loader import load_script


def test_shrink_benchmark_traffic_bound_closed_form():
    # benchmarks/shrink_speedup.py: activation bytes of a conv-by-conv ResNet-56
    # forward, summed by hand per block (stem 32·32·(3+16); 5 tensors per block, stride-2
    # blocks read their input at full resolution and the shortcut strided).
    from flax import nnx

    import sparsejax as sj
    from sparsejax.models import CifarResNet
    from sparsejax.shrink import shrink

    bench = load_script("benchmarks/shrink_speedup.py")
    dense = CifarResNet(56, (32, 32, 3), 10, rngs=nnx.Rngs(0))
    assert bench.conv_traffic(dense, 1, 4)["bytes"] == 4 * 1_315_840
    params = nnx.state(dense, nnx.Param)
    mask = sj.prune(sj.scores.magnitude(params), 0.5, structure=sj.Neurons(),
                    prunable=bench.PRUNABLE, reduction="l1")
    small = shrink(dense, mask)
    # conv1 outputs 8 / 16 / 32 channels: 1,057,792 elements per image
    assert bench.conv_traffic(small, 256, 2)["bytes"] == 2 * 256 * 1_057_792
