"""Writes augment_torchvision.json: torchvision's tensor transforms (ToTensor, pad + crop,
adjust_brightness/contrast/saturation, hflip, Normalize) on one random 8 x 8 RGB image, for
the augmentation test. Run from this folder with Python 3, torch and torchvision:
python make_augment_fixture.py
"""
import json

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F

rng = np.random.default_rng(0)
image = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
x = F.to_tensor(image).double()  # (3, 8, 8) in [0, 1]

cases = []
# Crop of the 2-pixel zero-padded image at (top, left).
for top, left in [(0, 0), (2, 2), (4, 1), (3, 4)]:
    padded = F.pad(x, [2, 2, 2, 2], fill=0)
    cases.append({"op": "crop", "padding": 2, "top": top, "left": left,
                  "out": F.crop(padded, top, left, 8, 8).flatten().tolist()})
for factor in [0.6, 0.87, 1.0, 1.4]:
    cases.append({"op": "brightness", "factor": factor, "out": F.adjust_brightness(x, factor).flatten().tolist()})
    cases.append({"op": "contrast", "factor": factor, "out": F.adjust_contrast(x, factor).flatten().tolist()})
    cases.append({"op": "saturation", "factor": factor, "out": F.adjust_saturation(x, factor).flatten().tolist()})
cases.append({"op": "flip", "out": F.hflip(x).flatten().tolist()})
mean = [129.37731888 / 255, 124.10583864 / 255, 112.47758569 / 255]
std = [68.20947949 / 255, 65.43124043 / 255, 70.45866994 / 255]
cases.append({"op": "normalize_cifar_fs", "out": F.normalize(x, mean, std).flatten().tolist()})
# A whole augmentation: crop (1, 3), saturation 1.3, brightness 0.7, contrast 1.2, flip.
y = F.crop(F.pad(x, [2, 2, 2, 2], fill=0), 1, 3, 8, 8)
y = F.adjust_contrast(F.adjust_brightness(F.adjust_saturation(y, 1.3), 0.7), 1.2)
cases.append({"op": "sequence", "out": F.hflip(y).flatten().tolist()})

for case in cases:  # 8 decimals: the test's tolerance is 1e-4
    case["out"] = [round(v, 8) for v in case["out"]]
with open("augment_torchvision.json", "w") as f:
    json.dump({"torchvision": torchvision.__version__, "image_hwc": image.flatten().tolist(),
               "size": 8, "cases": cases}, f)
print("ok", len(cases))
