"""Evaluation model wrappers on tiny random checkpoints: detectors, GenEval's colour classifier, judges."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from t2i_r1.eval import judges
from t2i_r1.eval.detectors import DetectedObject, Mask2FormerDetector, OWLv2Detector
from t2i_r1.eval.geneval import COLORS, ColorClassifier
from t2i_r1.eval.judges import JudgeRequest, OpenAIJudge, TransformersJudge, build_judge
from t2i_r1.testing.scorers import save_tiny_clip, save_tiny_mask2former, save_tiny_owlv2, save_tiny_vlm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-models")
    return {
        "clip": save_tiny_clip(root / "clip"),
        "owlv2": save_tiny_owlv2(root / "owlv2"),
        "mask2former": save_tiny_mask2former(root / "m2f"),
        "vlm": save_tiny_vlm(root / "vlm"),
    }


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_owlv2_labels_come_from_each_image_s_queries(tiny):
    detector = OWLv2Detector(tiny["owlv2"], threshold=0.0, device="cpu", batch_size=2)
    images = _images([(48, 48), (64, 40), (40, 40)])
    queries = [["dog", "cat"], ["lamp"], []]
    out = detector(images, queries)
    assert [len(o) > 0 for o in out] == [True, True, False]
    for objects, names, image in zip(out, queries, images):
        assert {o.label for o in objects} <= set(names)
        assert [o.score for o in objects] == sorted((o.score for o in objects), reverse=True)
        width, height = image.size
        assert all(0 <= o.box[0] <= o.box[2] <= width and 0 <= o.box[1] <= o.box[3] <= height for o in objects)
    # Boxes are the model's normalised boxes scaled by the padded square's side (max(w, h)), as OWLv2 pads.
    inputs = detector.processor(text=[["lamp"]], images=[images[1]], truncation=True, return_tensors="pt")
    with torch.no_grad():
        raw = detector.model(**inputs)
    score, index = raw.logits[0, :, 0].sigmoid().max(dim=0)
    cx, cy, w, h = (raw.pred_boxes[0, index] * 64).tolist()  # side = max(64, 40)
    best = out[1][0]
    assert best.score == pytest.approx(float(score), abs=1e-6)
    assert best.box == pytest.approx((max(cx - w / 2, 0), max(cy - h / 2, 0), min(cx + w / 2, 64), min(cy + h / 2, 40)), abs=1e-4)
    with pytest.raises(ValueError, match="open-vocabulary"):
        detector(images, None)


def test_mask2former_boxes_are_the_masks_bounding_boxes(tiny):
    detector = Mask2FormerDetector(tiny["mask2former"], max_per_image=20, device="cpu")
    images = _images([(48, 48), (40, 56)], seed=1)
    out = detector(images)
    assert len(detector.labels) == 80
    for objects, image in zip(out, images):
        assert 0 < len(objects) <= 20
        assert [o.score for o in objects] == sorted((o.score for o in objects), reverse=True)
        for o in objects:
            assert o.mask.shape == (image.size[1], image.size[0]) and o.mask.any()
            ys, xs = np.nonzero(o.mask)
            assert o.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert o.label in detector.labels and 0 < o.score <= 1


def test_colour_classifier_is_argmax_of_averaged_template_embeddings(tiny):
    classifier = ColorClassifier(tiny["clip"], device="cpu")
    image = _images([(48, 48)], seed=2)[0]
    mask = np.zeros((48, 48), dtype=bool)
    mask[10:30, 5:25] = True
    objects = [DetectedObject("cup", 0.9, (5.0, 10.0, 25.0, 30.0), mask), DetectedObject("cup", 0.8, (0.0, 0.0, 20.0, 20.0))]
    names = classifier(image, objects, "cup")
    # Expected by hand: crop = masked object on #999 grey, cut to its box; text = mean over the three
    # templates of the unit embeddings of "a photo of a {colour} cup" etc., renormalised; argmax of the dot products.
    crops = classifier.crops(image, objects)
    assert crops[0].size == (20, 20) and crops[0].getpixel((0, 0)) == image.getpixel((5, 10))
    grey = Image.new("RGB", (48, 48), "#999")
    assert classifier.crops(image, [DetectedObject("cup", 0.9, (0.0, 0.0, 48.0, 48.0), mask)])[0].getpixel((40, 40)) == grey.getpixel((40, 40))
    model, processor = classifier.model, classifier.processor
    with torch.no_grad():
        texts = [t.format(c=c, cls="cup") for c in COLORS for t in ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")]
        tok = processor.tokenizer(texts, padding=True, return_tensors="pt")
        t = torch.nn.functional.normalize(model.get_text_features(**tok).pooler_output, dim=-1).view(10, 3, -1).mean(1)
        t = torch.nn.functional.normalize(t, dim=-1)
        pixels = processor.image_processor(images=crops, return_tensors="pt")["pixel_values"]
        v = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    assert names == [COLORS[i] for i in (v @ t.T).argmax(-1).tolist()]
    assert classifier(image, [], "cup") == []


def test_transformers_judge_answers_text_and_image_requests(tiny):
    judge = build_judge(f"transformers:{tiny['vlm']}", device="cpu")
    assert isinstance(judge, TransformersJudge)
    judge.max_new_tokens = 6
    image = _images([(40, 40)], seed=3)[0]
    replies = judge([JudgeRequest("Rate it. Consistency:", [image], system="be strict"), JudgeRequest("Rate the plan.")])
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert judge.config()["decoding"] == "greedy"
    # Greedy: the same request gives the same reply.
    assert judge([JudgeRequest("Rate the plan.")]) == replies[1:]


class _Endpoint(BaseHTTPRequestHandler):
    calls: list = []
    statuses: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if status == 200:
            reply = {"choices": [{"message": {"content": "Consistency: 2\nRealism: 1\nAesthetic Quality: 0"}}]}
            self.wfile.write(json.dumps(reply).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(monkeypatch):
    _Endpoint.calls, _Endpoint.statuses = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(judges.time, "sleep", lambda s: None)  # no back-off waits in tests
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_judge_request_format_and_retry(endpoint, monkeypatch):
    monkeypatch.setenv("T2I_R1_JUDGE_API_KEY", "sk-test")
    monkeypatch.setenv("T2I_R1_JUDGE_URL", endpoint)
    judge = build_judge("openai:judge-model")
    assert isinstance(judge, OpenAIJudge) and judge.url == endpoint
    assert "sk-test" not in json.dumps(judge.config())  # the key never lands in results
    _Endpoint.statuses = [500]  # the first attempt fails, the retry succeeds
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    replies = judge([JudgeRequest("rate", [image], system="sys")])
    assert replies == ["Consistency: 2\nRealism: 1\nAesthetic Quality: 0"]
    assert len(_Endpoint.calls) == 2
    call = _Endpoint.calls[-1]
    assert call["path"] == "/v1/chat/completions" and call["auth"] == "Bearer sk-test"
    body = call["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    text, picture = body["messages"][1]["content"]
    assert text == {"type": "text", "text": "rate"}
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (8, 8) and decoded.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_openai_judge_errors(endpoint, monkeypatch):
    monkeypatch.setenv("T2I_R1_JUDGE_API_KEY", "sk-test")
    judge = OpenAIJudge("m", url=endpoint, retries=2, workers=2)
    _Endpoint.statuses = [400]
    with pytest.raises(ValueError, match="HTTP 400"):
        judge([JudgeRequest("rate")])
    _Endpoint.statuses = [503, 503]  # every attempt fails: an empty reply, scored as unparsable
    assert judge([JudgeRequest("rate")]) == [""]
    monkeypatch.delenv("T2I_R1_JUDGE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("T2I_R1_JUDGE_URL", raising=False)
    with pytest.raises(ValueError, match="API key"):
        OpenAIJudge("gpt-4o")
    with pytest.raises(ValueError, match="openai:MODEL"):
        build_judge("gpt-4o")


def test_grounding_dino_adapter_gives_pixel_boxes_and_the_asked_names():
    from t2i_r1.eval.detectors import GroundingDINODetector
    from t2i_r1.rewards.detection import Detection

    class Stub:  # GroundingDINOReward.detect's contract: normalised boxes, normalised labels
        def detect(self, images, phrases):
            assert phrases == [["Coat Rack", "hat"]]
            return [[Detection("hat", 0.4, (0.0, 0.0, 0.5, 0.25)), Detection("coat rack", 0.9, (0.5, 0.5, 1.0, 1.0))]]

    detector = GroundingDINODetector(threshold=0.3, reward=Stub())
    (objects,) = detector([Image.new("RGB", (64, 32))], [["Coat Rack", "hat"]])
    # most confident first; x scaled by the width 64, y by the height 32
    assert objects == [DetectedObject("Coat Rack", 0.9, (32.0, 16.0, 64.0, 32.0)), DetectedObject("hat", 0.4, (0.0, 0.0, 32.0, 8.0))]
    assert detector.config() == {"detector": "gdino", "checkpoint": "IDEA-Research/grounding-dino-tiny", "threshold": 0.3}


def test_wise_prompts_are_downloaded_once(tmp_path, shared_data):
    from t2i_r1.eval.wise import WISE, download_prompts

    source = shared_data / "benchmarks" / "wise"
    target = download_prompts(tmp_path / "cache", source_url=source.as_uri() + "/{name}")
    assert (target / "natural_science.json").read_bytes() == (source / "natural_science.json").read_bytes()
    bench = WISE(download_dir=target, source_url="file:///nonexistent/{name}", judge="openai:unused")
    assert len(bench.prompts()) == 1000  # already there: nothing fetched
    assert not any("differ" in note for note in bench.notes())  # the files' sha256 match the known version
    with pytest.raises(FileNotFoundError, match="--prompts-dir"):
        download_prompts(tmp_path / "empty", source_url="file:///nonexistent/{name}")
