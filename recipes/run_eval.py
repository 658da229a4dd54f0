"""Evaluate a saved student on any split: ``ltkd_hf.cli.evaluate`` (also installed as ``ltkd-eval``).

    python recipes/run_eval.py --model outputs/ltkd-demo/student --dataset builtin:digits --output_dir eval-out
    python recipes/run_eval.py --help
"""

from ltkd_hf.cli.evaluate import cli

if __name__ == "__main__":
    cli()
