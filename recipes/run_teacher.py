"""Train the biased teacher alone: ``ltkd_hf.cli.teacher`` (also installed as ``ltkd-teacher``).

    accelerate launch recipes/run_teacher.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml
    accelerate launch recipes/run_teacher.py --help
"""

from ltkd_hf.cli.teacher import cli

if __name__ == "__main__":
    cli()
