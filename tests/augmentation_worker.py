"""Records what each process trains on first, for the test that processes draw their own augmentation (run in
each process of a torchrun launch by two_process_jobs.py).

Every training image is one and the same picture, so two samples' pixels differ only by their augmentation.
device: uint8 `InMemoryImages` augmented on the device (`DeviceBatches`); loader: a dataset whose ``__getitem__``
pads, crops and flips with torchvision (torch's global generator), as a CPU transform does.
"""

from __future__ import annotations

import timm
import torch
from timm.data import resolve_data_config
from torchvision import transforms

from ltkd_hf import DistillationTrainer
from ltkd_hf.data import InMemoryImages, collate_images
from ltkd_hf.models import create_student

from tiny_setup import CLASS_COUNTS, NUM_CLASSES, make_config

N = 32
PICTURE = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


class CroppedPictures(torch.utils.data.Dataset):
    """``N`` copies of ``PICTURE``, each padded, cropped and flipped when read."""

    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.augment(PICTURE).float() / 255, "labels": torch.tensor(i % NUM_CLASSES),
                "index": torch.tensor(i)}


def record_first_batch(out: str, result: str, path: str) -> None:
    """Train one step on ``path``'s data (device or loader) in ``out``; write RESULT.rank<i>.pt: the
    ``pixel_values`` and ``index`` (the sampled rows) of the first batch ``compute_loss`` sees."""
    cifar = resolve_data_config(model=timm.create_model("cifar_resnet8x4"))  # 32 px, the padding-4 crop and flip
    torch.manual_seed(0)
    student = create_student("test_convnext", num_classes=NUM_CLASSES, label_names=[f"c{i}" for i in range(6)],
                             pretrained_cfg_overlay=cifar)
    if path == "device":
        data = InMemoryImages(PICTURE.expand(N, -1, -1, -1).clone(), torch.arange(N) % NUM_CLASSES, train=True,
                              class_names=[f"c{i}" for i in range(NUM_CLASSES)])
        parts = dict(train_dataset=data, data_collator=collate_images)
    else:
        parts = dict(train_dataset=CroppedPictures())
    config = make_config(out, max_steps=1, per_device_train_batch_size=8, distill_loss="ce",
                         device_augmentation=path == "device")
    trainer = DistillationTrainer(model=student, teacher_model=None, args=config, class_counts=CLASS_COUNTS, **parts)
    seen = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        if not seen:
            seen.append({key: inputs[key].detach().cpu() for key in ("pixel_values", "index")})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    torch.save(seen[0], f"{result}.rank{trainer.args.process_index}.pt")
