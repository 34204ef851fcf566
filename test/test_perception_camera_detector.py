"""Camera 2D detector core (perception/camera_detector.py): letterbox geometry and buffers,
peak decode and class-wise NMS on hand-made network outputs, target encoding as the inverse
of the decode, metadata and parameter checks, bad frames -> empty result with a reason, the
committed model finding a clearly visible car in a held-out frame, and the AP helpers of
tools/evaluate_camera_detector.py."""

import importlib.util
import json
import math
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from robotaxi_stack.perception.camera_detector import (
    CLASS_NAMES, CameraDetector, CameraDetectorConfigError, CameraDetectorParams, Preprocessor,
    box_iou, boxes_to_input, boxes_to_source, check_image, decode, encode_targets,
    heatmap_peaks, letterbox_geometry, load_metadata, nms_per_class)
from robotaxi_stack.perception.inference import ModelSignatureError
from robotaxi_stack.sim import perception_dataset

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The source tree's committed model (the default path resolves to the installed share).
MODEL = ROOT / 'models' / 'camera_detector.onnx'
_TOOL = ROOT / 'tools' / 'evaluate_camera_detector.py'
_spec = importlib.util.spec_from_file_location('evaluate_camera_detector', _TOOL)
evaluate_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evaluate_tool)

# Held-out frame with a fully visible, unoccluded car about 15 m ahead (found once by search;
# the fixture re-checks these facts so that a generator change cannot silently void the test).
CAR_SEED, CAR_INDEX = 11, 8
CAR_BOX = (304.5, 176.5, 379.5, 244.5)


@pytest.fixture(scope='module')
def detector():
    return CameraDetector(CameraDetectorParams(model_path=str(MODEL),
                                               providers=('CPUExecutionProvider',)))


@pytest.fixture(scope='module')
def car_frame():
    sample = perception_dataset.generate_sample(
        CAR_SEED, split='heldout', lidar=perception_dataset.lidar_config(16, 90))
    assert sample.labels[CAR_INDEX] == 1  # CAR
    assert sample.image_visible_px[CAR_INDEX] > 4000
    np.testing.assert_allclose(sample.image_boxes[CAR_INDEX], CAR_BOX)
    return sample


# ---------------------------------------------------------------------------- letterbox
def test_letterbox_geometry_fits_centres_and_maps_edges_both_ways():
    geometry = letterbox_geometry(1280, 720, 640, 384)
    assert (geometry.resized_width, geometry.resized_height) == (640, 360)
    assert (geometry.pad_x, geometry.pad_y) == (0, 12)
    assert geometry.scale_x == geometry.scale_y == 0.5
    # Image edges map to image edges; a pixel centre to the matching sub-pixel position.
    edges = np.array([[-0.5, -0.5, 1279.5, 719.5], [0.0, 0.0, 1.0, 1.0]])
    mapped = boxes_to_input(edges, geometry)
    np.testing.assert_allclose(mapped[0], [-0.5, 11.5, 639.5, 371.5])
    np.testing.assert_allclose(mapped[1], [-0.25, 11.75, 0.25, 12.25])
    np.testing.assert_allclose(boxes_to_source(mapped, geometry), edges)
    # Portrait source: padding left and right, the odd pixel on the right.
    tall = letterbox_geometry(300, 600, 640, 384)
    assert (tall.resized_width, tall.resized_height, tall.pad_x, tall.pad_y) == (192, 384,
                                                                                 224, 0)
    identity = letterbox_geometry(640, 384, 640, 384)
    assert identity.is_identity and (identity.pad_x, identity.pad_y) == (0, 0)


def test_boxes_to_source_clips_to_the_image():
    geometry = letterbox_geometry(1280, 720, 640, 384)
    clipped = boxes_to_source(np.array([[-5.0, 0.0, 700.0, 383.5]]), geometry)
    np.testing.assert_allclose(clipped, [[-0.5, -0.5, 1279.5, 719.5]])


@pytest.mark.parametrize('bad', [(0, 10, 10, 10), (10, -1, 10, 10), (10, 10, 2.5, 10)])
def test_letterbox_geometry_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match='must be an int >= 1'):
        letterbox_geometry(*bad)


def test_preprocessor_resizes_into_the_padded_buffer_and_orders_channels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    pre = Preprocessor(640, 384, 114)
    tensor, geometry = pre(image, bgr=False)
    assert tensor.shape == (1, 3, 384, 640) and tensor.dtype == np.float32
    expected = cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(tensor[0, :, 12:372].transpose(1, 2, 0), expected / 255.0,
                               atol=1e-6)
    np.testing.assert_allclose(tensor[0, :, :12], 114 / 255.0, atol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 372:], 114 / 255.0, atol=1e-6)
    # bgr8 input of the same pixels gives the RGB tensor.
    rgb_tensor = tensor.copy()
    bgr_tensor, _ = pre(np.ascontiguousarray(image[..., ::-1]), bgr=True)
    np.testing.assert_array_equal(bgr_tensor, rgb_tensor)
    assert geometry.pad_y == 12


def test_preprocessor_passes_input_sized_frames_without_a_copy():
    image = np.zeros((384, 640, 3), np.uint8)
    image[10, 20] = (255, 0, 0)
    pre = Preprocessor(640, 384, 114)
    letterboxed, geometry = pre.letterbox(image)
    assert letterboxed is image and geometry.is_identity
    tensor, _ = pre(image)
    assert tensor[0, 0, 10, 20] == pytest.approx(1.0) and tensor[0, 1, 10, 20] == 0.0


def test_preprocessor_clears_the_border_when_the_source_size_changes():
    pre = Preprocessor(640, 384, 114)
    pre(np.full((720, 1280, 3), 200, np.uint8))  # fills rows 12..371
    tensor, geometry = pre(np.full((600, 300, 3), 50, np.uint8))  # columns 224..415 only
    assert (geometry.pad_x, geometry.pad_y) == (224, 0)
    np.testing.assert_allclose(tensor[0, :, :, :224], 114 / 255.0, atol=1e-6)
    np.testing.assert_allclose(tensor[0, :, :, 224:416], 50 / 255.0, atol=1e-6)


def test_preprocessor_reads_strided_rows():
    # A zero-copy view of an Image message with row padding (step > width * 3).
    step = 640 * 3 + 64
    buffer = np.zeros(384 * step, np.uint8)
    view = np.ndarray((384, 640, 3), np.uint8, buffer=buffer, strides=(step, 3, 1))
    view[5, 6] = (1, 2, 3)
    tensor, _ = Preprocessor(640, 384, 114)(view, bgr=True)
    np.testing.assert_allclose(tensor[0, :, 5, 6] * 255.0, [3, 2, 1], atol=1e-4)


# ------------------------------------------------------------------------ decode / NMS
def _outputs(grid_w=80, grid_h=48):
    return (np.zeros((len(CLASS_NAMES), grid_h, grid_w), np.float32),
            np.zeros((4, grid_h, grid_w), np.float32))


def test_decode_turns_a_peak_into_its_box_and_suppresses_neighbours():
    heatmap, boxes = _outputs()
    heatmap[3, 20, 10] = 0.9          # pedestrian peak at cell (x 10, y 20)
    heatmap[3, 20, 11] = 0.8          # its neighbour: not a peak
    heatmap[3, 20, 13] = 0.7          # two cells away: its own peak
    heatmap[0, 40, 70] = 0.2          # car below the threshold
    boxes[:, 20, 10] = (0.25, 0.5, math.log(1.5), math.log(4.0))
    xyxy, scores, class_ids = decode(heatmap, boxes, stride=8, score_threshold=0.3, top_k=10)
    assert list(class_ids) == [3, 3]
    np.testing.assert_allclose(scores, [0.9, 0.7])
    centre_x, centre_y = (10 + 0.25) * 8 - 0.5, (20 + 0.5) * 8 - 0.5
    np.testing.assert_allclose(xyxy[0], [centre_x - 6.0, centre_y - 16.0, centre_x + 6.0,
                                         centre_y + 16.0])
    # top_k keeps the best peaks.
    _, top_scores, _ = decode(heatmap, boxes, 8, 0.3, top_k=1)
    np.testing.assert_allclose(top_scores, [0.9])


def test_heatmap_peaks_are_per_class():
    heatmap, _ = _outputs(8, 8)
    heatmap[0, 4, 4] = 0.9
    heatmap[1, 4, 5] = 0.5  # next to a better car peak, but another class
    class_ids, grid_y, grid_x, scores = heatmap_peaks(heatmap, 0.3, 10)
    assert list(zip(class_ids, grid_y, grid_x)) == [(0, 4, 4), (1, 4, 5)]


def test_decode_of_broken_log_sizes_stays_finite():
    heatmap, boxes = _outputs()
    heatmap[0, 5, 5] = 0.9
    boxes[2:, 5, 5] = 1e6
    xyxy, _, _ = decode(heatmap, boxes, 8, 0.3, 10)
    assert np.all(np.isfinite(xyxy))


def test_nms_is_class_wise_and_capped():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]],
                     float)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    class_ids = np.array([0, 0, 3, 0])
    assert list(nms_per_class(boxes, scores, class_ids, 0.5, 10)) == [0, 2, 3]
    assert list(nms_per_class(boxes, scores, class_ids, 0.95, 10)) == [0, 1, 2, 3]
    assert list(nms_per_class(boxes, scores, class_ids, 0.5, 2)) == [0, 2]
    assert len(nms_per_class(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0), 0.5,
                             10)) == 0


def test_box_iou_against_hand_values():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10],
                                                        [20, 20, 30, 30], [0, 0, 0, 0]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0, 0.0]])


def test_encode_targets_is_the_inverse_of_decode():
    boxes = np.array([[100.5, 150.5, 160.5, 200.5],   # car
                      [300.0, 170.0, 309.0, 198.0],   # pedestrian, 9 x 28 px
                      [-0.5, 100.0, 30.0, 180.0],     # truck cut by the left edge
                      [500.0, 180.0, 504.0, 186.0]])  # small bicycle: ignored
    class_ids = np.array([0, 3, 1, 2])
    ignore = np.array([False, False, False, True])
    targets = encode_targets(boxes, class_ids, ignore, len(CLASS_NAMES), 80, 48, 8)
    assert targets.heatmap.shape == (4, 48, 80) and targets.boxes.shape == (4, 48, 80)
    assert np.count_nonzero(targets.heatmap == 1.0) == 3
    assert targets.box_mask.sum() == 3
    xyxy, scores, decoded_classes = decode(targets.heatmap, targets.boxes, 8, 0.99, 10)
    order = np.argsort(decoded_classes)
    np.testing.assert_array_equal(decoded_classes[order], [0, 1, 3])
    np.testing.assert_allclose(xyxy[order], boxes[[0, 2, 1]], atol=1e-4)
    # The ignored bicycle: no positive, and no negative loss inside its box (its class only).
    assert targets.heatmap[2].max() == 0.0
    assert np.all(targets.heatmap_weight[2, 22:24, 62:64] == 0.0)
    assert np.all(targets.heatmap_weight[[0, 1, 3], 22:24, 62:64] == 1.0)
    assert targets.heatmap_weight[2].sum() > 0.99 * 80 * 48 - 10


# ------------------------------------------------------------------ metadata and params
def test_committed_metadata_matches_the_decoder():
    metadata = load_metadata(MODEL.with_suffix('.json'))
    assert metadata.classes == CLASS_NAMES
    assert (metadata.input_width, metadata.input_height) == (640, 384)
    assert metadata.input_width % metadata.stride == 0
    assert MODEL.stat().st_size < 10_000_000


def _model_copy(tmp_path, edit):
    shutil.copy(MODEL, tmp_path / 'camera_detector.onnx')
    document = json.loads(MODEL.with_suffix('.json').read_text())
    edit(document)
    (tmp_path / 'camera_detector.json').write_text(json.dumps(document))
    return tmp_path / 'camera_detector.onnx'


@pytest.mark.parametrize('edit, text', [
    (lambda d: d.update(classes=['car', 'pedestrian']), 'classes'),
    (lambda d: d['input'].pop('width'), 'input.width'),
    (lambda d: d.update(stride=7), 'multiple of stride'),
    (lambda d: d.update(format='other/1'), 'format'),
    (lambda d: d['outputs']['boxes'].update(channels=['x', 'y', 'w', 'h']), 'channels'),
])
def test_bad_metadata_stops_start_up_naming_the_key(tmp_path, edit, text):
    path = _model_copy(tmp_path, edit)
    with pytest.raises(CameraDetectorConfigError, match=text):
        CameraDetector(CameraDetectorParams(model_path=str(path),
                                            providers=('CPUExecutionProvider',)))


def test_metadata_that_disagrees_with_the_onnx_graph_is_a_signature_error(tmp_path):
    def wider(document):
        document['input'].update(width=1280, height=768)

    path = _model_copy(tmp_path, wider)
    with pytest.raises(ModelSignatureError, match="'image'"):
        CameraDetector(CameraDetectorParams(model_path=str(path),
                                            providers=('CPUExecutionProvider',)))


def test_missing_metadata_names_the_file(tmp_path):
    shutil.copy(MODEL, tmp_path / 'camera_detector.onnx')
    with pytest.raises(CameraDetectorConfigError, match='camera_detector.json'):
        CameraDetector(CameraDetectorParams(model_path=str(tmp_path / 'camera_detector.onnx')))


@pytest.mark.parametrize('values, text', [
    ({'score_threshold': 1.5}, 'score_threshold'),
    ({'nms_iou': 0.0}, 'nms_iou'),
    ({'max_detections': 0}, 'max_detections'),
    ({'providers': ()}, 'providers'),
])
def test_out_of_range_parameters_are_named(values, text):
    with pytest.raises(CameraDetectorConfigError, match=text):
        CameraDetectorParams(**values)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('image, encoding, expected, text', [
    (np.zeros((384, 640), np.uint8), 'mono8', (0, 0), "encoding 'mono8'"),
    (np.zeros((384, 640, 3), np.float32), 'rgb8', (0, 0), 'dtype float32'),
    (np.zeros((384, 640, 4), np.uint8), 'rgb8', (0, 0), 'shape (384, 640, 4)'),
    (np.zeros((0, 640, 3), np.uint8), 'rgb8', (0, 0), 'empty'),
    (np.zeros((192, 320, 3), np.uint8), 'rgb8', (640, 384), '320 x 192 differs'),
    ([[1, 2, 3]], 'rgb8', (0, 0), 'numpy array'),
])
def test_check_image_names_the_problem(image, encoding, expected, text):
    assert text in check_image(image, encoding, *expected)


def test_bad_frames_give_an_empty_result_with_a_reason(detector):
    sized = CameraDetector(CameraDetectorParams(model_path=str(MODEL),
                                                providers=('CPUExecutionProvider',),
                                                expected_width_px=640,
                                                expected_height_px=384))
    result = sized.detect(np.zeros((720, 1280, 3), np.uint8))
    assert len(result) == 0 and '1280 x 720 differs' in result.reason
    result = detector.detect(np.zeros((384, 640), np.uint8), 'mono8')
    assert len(result) == 0 and 'mono8' in result.reason
    assert result.boxes.shape == (0, 4) and result.labels.dtype == np.uint8


def test_blank_frame_gives_no_detections_and_stage_times(detector):
    result = detector.detect(np.full((384, 640, 3), 114, np.uint8))
    assert result.reason == '' and len(result) == 0
    assert set(result.stage_ms) == {'pre', 'inference', 'post', 'total'}
    assert result.stage_ms['total'] >= result.stage_ms['inference'] > 0.0


# ------------------------------------------------------------------- committed model
def test_committed_model_finds_the_clearly_visible_car(detector, car_frame):
    result = detector.detect(car_frame.image, 'rgb8')
    assert result.reason == ''
    cars = result.labels == 1
    assert np.any(cars)
    iou = box_iou(result.boxes[cars], np.array([CAR_BOX]))[:, 0]
    best = int(np.argmax(iou))
    assert iou[best] > 0.7
    assert result.scores[cars][best] > 0.5


def test_bgr_and_letterboxed_frames_find_the_same_car(detector, car_frame):
    large_bgr = np.ascontiguousarray(cv2.resize(car_frame.image, (1280, 768),
                                                interpolation=cv2.INTER_NEAREST)[..., ::-1])
    result = detector.detect(large_bgr, 'bgr8')
    cars = result.labels == 1
    expected = np.array([CAR_BOX]) * 2.0 + 0.5  # edges scale about -0.5
    assert box_iou(result.boxes[cars], expected).max() > 0.7


# ---------------------------------------------------------------- evaluation helpers
def test_match_frame_prefers_real_ground_truth_and_skips_ignored():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [100, 100, 110, 110]], float)
    ignore = np.array([True, False, False])
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [200, 200, 210, 210]],
                    float)
    tp, ignored = evaluate_tool.match_frame(pred, np.array([0.9, 0.8, 0.7, 0.6]), gt, ignore)
    assert list(tp) == [True, False, False, False]
    assert list(ignored) == [False, True, False, False]


def test_average_precision_against_hand_values():
    ap = evaluate_tool.average_precision
    assert ap(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1.0)
    assert ap(np.array([0.9]), np.array([False]), 1) == 0.0
    assert ap(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert math.isnan(ap(np.zeros(0), np.zeros(0, bool), 0))
    # A false positive above the only true positive: precision 0.5 at every recall point.
    assert ap(np.array([0.9, 0.8]), np.array([False, True]), 1) == pytest.approx(0.5)
    # Half the ground truth found at precision 1: recall points 0..0.5 (51 of 101).
    assert ap(np.array([0.9]), np.array([True]), 2) == pytest.approx(51 / 101)


def test_recall_at_precision_picks_the_best_valid_cut():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    tp = np.array([True, True, False, True, False])
    recall, precision, threshold = evaluate_tool.recall_at_precision(scores, tp, 4, 0.7)
    assert (recall, precision, threshold) == (0.75, 0.75, 0.6)
    assert evaluate_tool.recall_at_precision(scores, tp, 4, 0.99)[:1] == (0.5,)
    recall, precision, _ = evaluate_tool.recall_at_precision(np.array([0.9]),
                                                             np.array([False]), 1, 0.8)
    assert recall == 0.0 and math.isnan(precision)
