"""Overall and per-group (head / medium / tail) top-1 accuracy as an `evaluate` metric.

evaluate copies this script alone into its module cache and imports it from there: it must import the
package absolutely (a relative import would be looked up as a sibling file), and keep one ``import`` per
line (evaluate's import scanner reads only the first name of ``import a, b``).
"""

import datasets
import evaluate

from ltkd_hf.evaluation.metrics import group_accuracy
from ltkd_hf.evaluation.metrics import top1_accuracy
from ltkd_hf.groups import ClassGroups

_CITATION = """\
@inproceedings{kim2026ltkd,
  title     = {Distilling Balanced Knowledge from a Biased Teacher},
  author    = {Kim, Seonghak},
  booktitle = {CVPR},
  year      = {2026},
  note      = {arXiv:2506.18496}
}
"""

_DESCRIPTION = """\
Top-1 accuracy overall and per class-frequency group. A group's accuracy is the mean correctness over the
test samples whose label is in that group; on a balanced test set this equals the mean of the group's
per-class accuracies.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices (the argmax of the logits).
    references (list of int): ground-truth class indices.
    class_to_group (list of int, optional): the group id of every class, in class-index order
        (``ClassGroups.class_to_group``). Without it only the overall accuracy is returned.
    group_names (list of str, optional): one name per group id (``ClassGroups.names``); required
        with ``class_to_group``.
Returns:
    accuracy (float): overall top-1 accuracy in [0, 1].
    accuracy_<name> (float): top-1 accuracy over the samples of each group (nan if it has none).
Examples:
    >>> import ltkd_hf.evaluation
    >>> metric = ltkd_hf.evaluation.load_group_accuracy()
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2],
    ...                class_to_group=[0, 1, 1], group_names=["head", "tail"])
    {'accuracy': 0.75, 'accuracy_head': 1.0, 'accuracy_tail': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroupAccuracy(evaluate.Metric):
    """Overall and per-group top-1 accuracy for long-tailed classification."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2506.18496"],
        )

    def _compute(self, predictions, references, class_to_group=None, group_names=None) -> dict:
        if class_to_group is None:
            if group_names is not None:
                raise ValueError(
                    f"group_names={list(group_names)} was given without class_to_group; pass both "
                    f"(ClassGroups.class_to_group and ClassGroups.names) or neither."
                )
            return {"accuracy": top1_accuracy(predictions, references)}
        if group_names is None:
            raise ValueError(
                "class_to_group was given without group_names; pass group_names=ClassGroups.names "
                "(one name per group id)."
            )
        return group_accuracy(predictions, references, ClassGroups(tuple(class_to_group), tuple(group_names)))
