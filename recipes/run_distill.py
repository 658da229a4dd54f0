"""Distill a balanced student from a biased teacher: ``ltkd_hf.cli.distill`` (also installed as ``ltkd-distill``).

    accelerate launch recipes/run_distill.py                                   # the offline digits demo
    accelerate launch recipes/run_distill.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_distill.py --help
"""

from ltkd_hf.cli.distill import cli

if __name__ == "__main__":
    cli()
