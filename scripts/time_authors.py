#!/usr/bin/env python3
"""Times one call of the authors' pruning function (adekhovich/NNrelief) on this machine.

For a same-machine comparison with relief's pruning call (docs/performance.md): a seeded
ResNet-20 or VGG-like (CIFAR-10) from the authors' models.py with random BatchNorm running
statistics, N(0,1) inputs, eval mode, autograd on (as their eval.py calls it),
alpha_conv 0.9, alpha_fc 0.95, torch.set_num_threads(2). Also times one no-grad PyTorch
forward pass over the same batch. Needs a checkout of the authors' repository (not part of
relief):

  .venv/bin/python scripts/time_authors.py /path/to/NNrelief resnet20 64
  .venv/bin/python scripts/time_authors.py /path/to/NNrelief vgg-like 16
"""

import sys
import time

import torch


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("resnet20", "vgg-like"):
        sys.exit(__doc__)
    sys.path.insert(0, sys.argv[1])
    import models  # the authors' code

    name = sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if name == "resnet20":
        from resnet_prune import resnet_pruning as pruning

        net = models.resnet20(10, "cpu")
    else:
        from vgg_prune import vgg_pruning as pruning

        net = models.VGG("vgg-like", num_classes=10, device="cpu")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(n, 3, 32, 32)
    with torch.no_grad():
        net(x[:2])
        t = time.perf_counter()
        net(x)
        print(f"{name}: pytorch no-grad forward, batch {n}: {time.perf_counter() - t:.3f} s", flush=True)
    t = time.perf_counter()
    pruning(net, 0.9, 0.95, x, "cpu")
    print(f"{name}: authors' pruning call, batch {n}: {time.perf_counter() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
