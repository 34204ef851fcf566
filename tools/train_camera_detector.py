"""Train the camera 2D detector on simulated frames and export models/camera_detector.onnx.

Usage (torch lives in .venv-tools only; CPU, one thread by default). The committed model:

    PYTHONPATH=src .venv-tools/bin/python tools/train_camera_detector.py \
        --frames 2500 --steps 1500 --seed 0

(without --steps, as many steps as fit --time-budget-min).

1. Data: `perception_dataset.generate_sample(seed, split='train', camera=True)` for seeds
   0 .. frames-1. The generator always casts a LiDAR sweep; a 16 x 90-ray one costs nothing and
   the camera does not depend on it. Each frame is letterboxed into the network input (the
   run-time `Preprocessor`) and cached with its boxes in out/datasets/camera/*.npz chunks that
   later runs reuse. Ground truth: the visible-pixel boxes of cars, trucks/buses, bicycles and
   pedestrians; those with fewer than --min-visible-px visible pixels become ignore regions
   (neither positives nor negatives); debris (UNKNOWN) is background.
2. Model: a CenterNet-style fully convolutional network: a space-to-depth stem (4 x 4 pixel
   blocks to channels, so full-resolution detail reaches the features of 1/4 resolution
   without convolutions at full resolution), 3 x 3 conv-BN-ReLU stages down to 1/64, an FPN
   top-down path back to 1/8, and 1 x 1 heads: per-class centre heatmap (sigmoid) and per cell
   [offset_x, offset_y] (sigmoid) + [log width, log height] in cells. Decode, NMS and the
   target encoding are in perception/camera_detector.py.
3. Training: focal loss on the heatmap (CenterNet: alpha 2, beta 4) plus L1 on offsets and
   log sizes at object centres; AdamW, linear warm-up then cosine decay; horizontal flips.
   The number of steps is --steps, or planned after the warm-up steps to fill
   --time-budget-min on this (shared) machine; the JSON records it, and --steps with the
   same seed reproduces the run.
4. Export: ONNX opset 17 (TorchScript exporter), checked against torch with onnxruntime, and
   models/camera_detector.json (input, classes, outputs, FLOPs and parameters counted from the
   layer shapes, training command, seed, times, final losses).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import pathlib
import platform
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'src'))

from robotaxi_stack.perception.camera_detector import (  # noqa: E402
    BOX_CHANNELS, CLASS_LABELS, CLASS_NAMES, MODEL_FORMAT, Preprocessor, boxes_to_input,
    encode_targets)
from robotaxi_stack.sim import perception_dataset  # noqa: E402

LOG = logging.getLogger('train_camera_detector')
INPUT_WIDTH, INPUT_HEIGHT = 640, 384
STRIDE = 8
PAD_VALUE = 114
CHUNK_FRAMES = 100
# Cache layout version: bump when what a chunk holds changes.
CACHE_VERSION = 1
# Stage widths: stem (1/4), then 1/8, 1/16, 1/32, 1/64; FPN and head width.
STAGE_CHANNELS = (24, 48, 64, 96, 128)
HEAD_CHANNELS = 48
HEATMAP_PRIOR = 0.1
WARMUP_STEPS = 60


# ----------------------------------------------------------------------------------------
# Data
def _chunk_path(cache_dir: pathlib.Path, split: str, start: int) -> pathlib.Path:
    return cache_dir / (f'{split}_v{CACHE_VERSION}_{INPUT_WIDTH}x{INPUT_HEIGHT}_'
                        f'{start:06d}_{CHUNK_FRAMES}.npz')


def _make_chunk(split: str, start: int, preprocess: Preprocessor) -> dict[str, np.ndarray]:
    """CHUNK_FRAMES letterboxed frames and their boxes (network-input pixel edges)."""
    lidar = perception_dataset.lidar_config(16, 90)  # the camera does not depend on it
    images, boxes, class_ids, visible_px, frame_index = [], [], [], [], []
    for k, seed in enumerate(range(start, start + CHUNK_FRAMES)):
        sample = perception_dataset.generate_sample(seed, split=split, lidar=lidar,
                                                    camera=True)
        letterboxed, geometry = preprocess.letterbox(sample.image)
        images.append(letterboxed.copy())
        classes = perception_dataset.train_class_indices(sample.labels)
        keep = (classes >= 0) & (sample.image_visible_px > 0)
        boxes.append(boxes_to_input(sample.image_boxes[keep], geometry))
        class_ids.append(classes[keep])
        visible_px.append(sample.image_visible_px[keep])
        frame_index.append(np.full(int(keep.sum()), k, np.int64))
    return {'images': np.stack(images), 'boxes': np.concatenate(boxes),
            'class_ids': np.concatenate(class_ids), 'visible_px': np.concatenate(visible_px),
            'frame_index': np.concatenate(frame_index)}


def load_frames(cache_dir: pathlib.Path, split: str, frames: int):
    """(images (F, H, W, 3) uint8, per-frame list of (boxes, class_ids, visible_px)),
    generating and caching missing chunks."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    preprocess = Preprocessor(INPUT_WIDTH, INPUT_HEIGHT, PAD_VALUE)
    chunks = -(-frames // CHUNK_FRAMES)
    images = np.empty((chunks * CHUNK_FRAMES, INPUT_HEIGHT, INPUT_WIDTH, 3), np.uint8)
    objects = []
    start_time = time.perf_counter()
    for chunk in range(chunks):
        start = chunk * CHUNK_FRAMES
        path = _chunk_path(cache_dir, split, start)
        if path.is_file():
            data = dict(np.load(path))
        else:
            data = _make_chunk(split, start, preprocess)
            tmp = path.with_suffix('.tmp.npz')
            np.savez_compressed(tmp, **data)
            tmp.rename(path)
            LOG.info('generated %s frames %d..%d (%.0f s so far)', split, start,
                     start + CHUNK_FRAMES - 1, time.perf_counter() - start_time)
        images[start:start + CHUNK_FRAMES] = data['images']
        for k in range(CHUNK_FRAMES):
            mine = data['frame_index'] == k
            objects.append((data['boxes'][mine], data['class_ids'][mine],
                            data['visible_px'][mine]))
    return images[:frames], objects[:frames]


def batch_targets(objects, flips: np.ndarray, min_visible_px: int) -> dict[str, torch.Tensor]:
    """Stacked targets of one batch; flipped frames get mirrored boxes."""
    grid_w, grid_h = INPUT_WIDTH // STRIDE, INPUT_HEIGHT // STRIDE
    fields = {'heatmap': [], 'heatmap_weight': [], 'boxes': [], 'box_mask': []}
    for (boxes, class_ids, visible_px), flip in zip(objects, flips):
        if flip:
            # Pixel edge e mirrors to (W - 1) - e in the CameraInfo convention.
            boxes = boxes[:, [2, 1, 0, 3]] * [-1.0, 1.0, -1.0, 1.0] + [INPUT_WIDTH - 1, 0.0,
                                                                       INPUT_WIDTH - 1, 0.0]
        targets = encode_targets(boxes, class_ids, visible_px < min_visible_px,
                                 len(CLASS_NAMES), grid_w, grid_h, STRIDE)
        for name in fields:
            fields[name].append(getattr(targets, name))
    return {name: torch.from_numpy(np.stack(values)) for name, values in fields.items()}


# ----------------------------------------------------------------------------------------
# Model
def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1,
                 kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class CameraNet(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> heatmap logits (B, C, H/8, W/8), box maps (B, 4, H/8,
    W/8) [offset logits x, y, log width, log height]."""

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        c4, c8, c16, c32, c64 = STAGE_CHANNELS
        self.stem = nn.Sequential(nn.PixelUnshuffle(4), conv_bn_relu(48, c4, kernel=1))
        self.down8 = nn.Sequential(conv_bn_relu(c4, c8, 2), conv_bn_relu(c8, c8))
        self.down16 = nn.Sequential(conv_bn_relu(c8, c16, 2), conv_bn_relu(c16, c16))
        self.down32 = nn.Sequential(conv_bn_relu(c16, c32, 2), conv_bn_relu(c32, c32))
        self.down64 = nn.Sequential(conv_bn_relu(c32, c64, 2), conv_bn_relu(c64, c64))
        self.lateral = nn.ModuleList(nn.Conv2d(c, HEAD_CHANNELS, 1)
                                     for c in (c8, c16, c32, c64))
        self.fuse = conv_bn_relu(HEAD_CHANNELS, HEAD_CHANNELS)
        self.heatmap = nn.Conv2d(HEAD_CHANNELS, num_classes, 1)
        self.boxes = nn.Conv2d(HEAD_CHANNELS, len(BOX_CHANNELS), 1)
        nn.init.constant_(self.heatmap.bias, -math.log((1.0 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x8 = self.down8(self.stem(image))
        x16 = self.down16(x8)
        x32 = self.down32(x16)
        x64 = self.down64(x32)
        top = self.lateral[3](x64)
        for lateral, features in zip(self.lateral[2::-1], (x32, x16, x8)):
            top = lateral(features) + F.interpolate(top, scale_factor=2.0, mode='nearest')
        features = self.fuse(top)
        return self.heatmap(features), self.boxes(features)


class ExportNet(nn.Module):
    """The graph that is exported: scores and offsets through a sigmoid."""

    def __init__(self, net: CameraNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heatmap, boxes = self.net(image)
        return torch.sigmoid(heatmap), torch.cat([torch.sigmoid(boxes[:, :2]), boxes[:, 2:]],
                                                 dim=1)


def count_flops(net: nn.Module, height: int, width: int) -> tuple[int, int]:
    """(FLOPs, parameters) of one forward pass: 2 x multiply-accumulates of every Conv2d from
    its output shape (BN folds into the convs at export; activations, adds and resizes are
    not counted)."""
    flops = [0]

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        flops[0] += 2 * per_output * output.numel() // output.shape[0]

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Conv2d)]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, height, width))
    net.train(was_training)
    for handle in handles:
        handle.remove()
    return flops[0], sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------------
# Training
def losses(heatmap_logits: torch.Tensor, box_maps: torch.Tensor,
           targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CenterNet focal loss (normalised by the number of objects) and L1 box losses."""
    target = targets['heatmap']
    weight = targets['heatmap_weight']
    positive = target.eq(1.0).float()
    log_p = F.logsigmoid(heatmap_logits)
    log_not_p = F.logsigmoid(-heatmap_logits)
    p = log_p.exp()
    positive_loss = -(1.0 - p) ** 2 * log_p * positive
    negative_loss = -((1.0 - target) ** 4) * p ** 2 * log_not_p * (1.0 - positive) * weight
    objects = positive.sum().clamp(min=1.0)
    focal = (positive_loss.sum() + negative_loss.sum()) / objects
    mask = targets['box_mask'].unsqueeze(1)
    box_targets = targets['boxes']
    centres = mask.sum().clamp(min=1.0)
    offset = (torch.abs(torch.sigmoid(box_maps[:, :2]) - box_targets[:, :2]) * mask).sum() \
        / centres
    size = (torch.abs(box_maps[:, 2:] - box_targets[:, 2:]) * mask).sum() / centres
    return {'heatmap': focal, 'offset': offset, 'size': size,
            'total': focal + offset + size}


def learning_rate_factor(step: int, total_steps: int) -> float:
    """Linear warm-up over WARMUP_STEPS from 0.1, then cosine decay to 0.01 at total_steps."""
    if step < WARMUP_STEPS:
        return 0.1 + 0.9 * step / WARMUP_STEPS
    progress = min(1.0, (step - WARMUP_STEPS) / max(1, total_steps - WARMUP_STEPS))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(net: CameraNet, images: np.ndarray, objects, args) -> tuple[dict[str, float], int]:
    """Train for --steps steps, or as many as fit --time-budget-min (planned from the speed of
    the warm-up steps, which do not depend on the total). Returns (final running losses,
    steps); the same seed and --steps reproduce the run."""
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = len(images) // args.batch
    total_steps = args.steps
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total_steps))
    net.train()
    start = time.perf_counter()
    running: dict[str, float] = {}
    step = 0
    while total_steps is None or step < total_steps:
        if step % steps_per_epoch == 0:
            order = rng.permutation(len(images))
        first = (step % steps_per_epoch) * args.batch
        index = np.sort(order[first:first + args.batch])
        flips = rng.random(len(index)) < 0.5
        batch = images[index]
        batch[flips] = batch[flips, :, ::-1]
        targets = batch_targets([objects[i] for i in index], flips, args.min_visible_px)
        tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        heatmap_logits, box_maps = net(tensor)
        loss = losses(heatmap_logits, box_maps, targets)
        optimizer.zero_grad(set_to_none=True)
        loss['total'].backward()
        optimizer.step()
        step += 1
        if total_steps is None and step == WARMUP_STEPS:
            per_step_s = (time.perf_counter() - start) / step
            total_steps = max(step + 1, int(args.time_budget_min * 60.0 / per_step_s))
            LOG.info('%.2f s per step: planned %d steps (%.1f epochs) for %.0f min', per_step_s,
                     total_steps, total_steps / steps_per_epoch, args.time_budget_min)
        schedule.step()  # the cosine part (from WARMUP_STEPS on) needs total_steps
        for name, value in loss.items():
            value = float(value.detach())
            running[name] = 0.98 * running.get(name, value) + 0.02 * value
        if step % 50 == 0 or step == total_steps:
            elapsed = time.perf_counter() - start
            LOG.info('epoch %.2f step %d/%s loss %s lr %.2e %.0f s', step / steps_per_epoch,
                     step, total_steps, ' '.join(f'{k} {v:.3f}' for k, v in running.items()),
                     schedule.get_last_lr()[0], elapsed)
    net.eval()
    return {f'{name}_loss': round(value, 4) for name, value in running.items()}, step


def export(net: CameraNet, path: pathlib.Path) -> float:
    """Write the ONNX model; returns the largest |onnxruntime - torch| output difference."""
    import onnxruntime as ort

    wrapper = ExportNet(net).eval()
    dummy = torch.rand(1, 3, INPUT_HEIGHT, INPUT_WIDTH, generator=torch.Generator().manual_seed(1))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(wrapper, (dummy,), str(path), opset_version=17, dynamo=False,
                      input_names=['image'], output_names=['heatmap', 'boxes'],
                      do_constant_folding=True)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(None, {'image': dummy.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(dummy)]
    return max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=2500, help='training frames')
    parser.add_argument('--steps', type=int,
                        help='optimiser steps (default: as many as --time-budget-min allows)')
    parser.add_argument('--time-budget-min', type=float, default=30.0,
                        help='training wall time when --steps is not given')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lr', type=float, default=3e-3, help='peak learning rate')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--min-visible-px', type=int, default=50,
                        help='smaller objects are ignore regions')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--cache-dir', type=pathlib.Path,
                        default=ROOT / 'out' / 'datasets' / 'camera')
    parser.add_argument('--output', type=pathlib.Path,
                        default=ROOT / 'models' / 'camera_detector.onnx')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    command = 'PYTHONPATH=src .venv-tools/bin/python tools/train_camera_detector.py ' + \
        ' '.join(shlex.quote(a) for a in sys.argv[1:])

    data_start = time.perf_counter()
    images, objects = load_frames(args.cache_dir, 'train', args.frames)
    data_s = time.perf_counter() - data_start
    counts = np.bincount(np.concatenate([o[1][o[2] >= args.min_visible_px] for o in objects]),
                         minlength=len(CLASS_NAMES))
    LOG.info('%d frames ready in %.0f s; objects per class %s', len(images), data_s,
             dict(zip(CLASS_NAMES, counts.tolist())))

    net = CameraNet()
    flops, parameters = count_flops(net, INPUT_HEIGHT, INPUT_WIDTH)
    LOG.info('model: %.3f GFLOPs, %d parameters', flops / 1e9, parameters)
    train_start = time.perf_counter()
    final_losses, steps = train(net, images, objects, args)
    train_s = time.perf_counter() - train_start
    max_diff = export(net, args.output)
    LOG.info('exported %s (%d bytes); onnxruntime vs torch max |diff| %.2e', args.output,
             args.output.stat().st_size, max_diff)
    grid = [INPUT_HEIGHT // STRIDE, INPUT_WIDTH // STRIDE]
    metadata = {
        'format': MODEL_FORMAT,
        'architecture': 'CenterNet-style: space-to-depth stem (4x4), conv-BN-ReLU stages to '
                        '1/64, FPN to 1/8, 1x1 heatmap and box heads',
        'input': {'name': 'image', 'width': INPUT_WIDTH, 'height': INPUT_HEIGHT,
                  'shape': [1, 3, INPUT_HEIGHT, INPUT_WIDTH], 'dtype': 'float32',
                  'layout': 'NCHW', 'channel_order': 'RGB', 'scale': '1/255',
                  'pad_value': PAD_VALUE, 'letterbox': 'aspect kept, centred'},
        'classes': list(CLASS_NAMES),
        'class_labels': CLASS_LABELS.tolist(),
        'stride': STRIDE,
        'outputs': {
            'heatmap': {'name': 'heatmap', 'shape': [1, len(CLASS_NAMES)] + grid,
                        'meaning': 'per-class centre score (sigmoid)'},
            'boxes': {'name': 'boxes', 'shape': [1, len(BOX_CHANNELS)] + grid,
                      'channels': list(BOX_CHANNELS),
                      'meaning': 'centre offset in cells (sigmoid, 0..1) and log box size in '
                                 'cells, per cell'}},
        'flops': int(flops),
        'parameters': int(parameters),
        'training': {
            'command': command, 'seed': args.seed, 'frames': len(images),
            'split': 'train', 'generator_seeds': [0, len(images) - 1],
            'steps': steps, 'epochs': round(steps * args.batch / len(images), 2),
            'reproduce_with': f'--steps {steps}', 'batch': args.batch, 'peak_lr': args.lr,
            'min_visible_px': args.min_visible_px, 'objects_per_class':
                dict(zip(CLASS_NAMES, counts.tolist())),
            'data_wall_s': round(data_s, 1), 'train_wall_s': round(train_s, 1),
            'torch_threads': args.threads, 'final': final_losses,
            'onnx_vs_torch_max_abs_diff': max_diff, 'torch': torch.__version__,
            'python': platform.python_version(), 'exporter': 'torch.onnx.export(dynamo=False)',
            'opset': 17},
    }
    args.output.with_suffix('.json').write_text(json.dumps(metadata, indent=2) + '\n')
    LOG.info('wrote %s; data %.0f s, training %.0f s', args.output.with_suffix('.json'),
             data_s, train_s)


if __name__ == '__main__':
    main()
