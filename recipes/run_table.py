"""The paper's table in one command: ``ltkd_hf.cli.table`` (also installed as ``ltkd-table``).

    python recipes/run_table.py --config recipes/configs/cifar100_lt_r100_resnet32x4_resnet8x4.yaml \
        --losses ce kd dkd dist bkd ltkd --seeds 0 1 2 --output_dir outputs/table-cifar100-r100
    python recipes/run_table.py --losses kd ltkd --seeds 0 1 2 --sweep alpha=1,6 beta=1,6 --dry_run
"""

from ltkd_hf.cli.table import cli

if __name__ == "__main__":
    cli()
