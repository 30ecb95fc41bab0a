"""The Gradio page around a ``GenerationHandler`` (gradio is imported only when a page is built).

Layout, after the Janus demo: prompt and Generate on top, the sampling controls under them, then one
column per model (two with ``--compare``): its plans, streamed into a box as they are written, and a
grid of its images with each image's plan printed under it; the download of images + JSON at the
bottom.

Choices:
1. The image grid is HTML we write (images inlined as PNG data URIs, the full plan under each), not a
   ``gr.Gallery``: a gallery cuts captions to one line, and the plan is the point of this page.
2. Each output is sent only when it changed (``gr.skip()`` otherwise), and a model's grid is rendered
   once, when its images arrive: streaming a plan token does not re-send images.
3. The theme uses system fonts only, so the page loads with no internet access.
4. A quiet server log: inputs the page refuses (an image count outside the slider, a negative seed) are
   reported on the page without a traceback in the log (``quiet_limits``), and Gradio's start-up lines
   (its ``share=True`` hint, which a command-line user cannot act on) are off; ``t2i-r1 serve`` prints
   the address itself.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from io import BytesIO

from t2i_r1.pipeline import Generation
from t2i_r1.serve.handler import GenerationHandler, Update

GRADIO_HINT = "the web page needs gradio, the optional 'demo' extra: pip install 't2i-r1[demo]' (gradio==6.31.0)"

EXAMPLE_PROMPTS = [
    "a red square to the left of a blue circle",
    "two green triangles above a yellow ellipse",
    "a small white cross below a large grey pentagon",
]

GRID_CSS = """
.t2i-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.t2i-card { margin: 0; border: 1px solid var(--border-color-primary); border-radius: 8px; overflow: hidden;
            background: var(--background-fill-secondary); }
.t2i-card img { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: contain; background: #000; }
.t2i-card figcaption { padding: 6px 8px; font-size: 0.85em; line-height: 1.35; white-space: pre-wrap;
                       overflow-wrap: anywhere; max-height: 12em; overflow-y: auto; }
.t2i-card figcaption b { display: block; font-size: 0.9em; opacity: 0.7; }
"""

STATUS_CSS = """
.t2i-status { padding: 8px 12px; border-radius: 6px; background: var(--background-fill-secondary); }
.t2i-status.error { background: #fde8e8; color: #9b1c1c; border: 1px solid #f8b4b4; font-weight: 600; }
.t2i-status:empty { display: none; }
"""

NOTE_CSS = ".t2i-note { padding: 8px 12px; border-radius: 6px; background: #fff8e1; border: 1px solid #f5d77a; color: #6b4e00; }"


def require_gradio():
    try:
        import gradio
    except ImportError as err:
        raise ModuleNotFoundError(GRADIO_HINT, name="gradio") from err
    return gradio


def png_data_uri(image) -> str:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_grid(generations: Sequence[Generation] | None) -> str:
    """The image grid: each image with its plan (or, without a plan, its prompt) under it."""
    if not generations:
        return ""
    cards = []
    for i, g in enumerate(generations):
        label, text = (f"Plan {i + 1}", g.plan) if g.plan is not None else (f"Image {i + 1} (no plan)", g.prompt)
        cards.append(
            f'<figure class="t2i-card"><img src="{png_data_uri(g.image)}" alt="image {i + 1}">'
            f"<figcaption><b>{html.escape(label)}</b>{html.escape(text)}</figcaption></figure>"
        )
    return f'<div class="t2i-grid">{"".join(cards)}</div>'


def render_status(update: Update) -> str:
    if not update.status:
        return ""
    kind = "t2i-status error" if update.error else "t2i-status"
    text = ("Error: " if update.error else "") + update.status
    return f'<div class="{kind}" role="{"alert" if update.error else "status"}">{html.escape(text)}</div>'


def page_values(update: Update, grids: list[str]) -> list:
    """Output values in page order: status, download, then each model's plan box and grid."""
    values = [render_status(update), str(update.download) if update.download else None]
    for plan, grid in zip(update.plans, grids):
        values += [plan, grid]
    return values


def make_request_fn(handler: GenerationHandler, skip):
    """The streaming event function: handler updates -> output values, unchanged ones replaced by ``skip()``."""

    def generate(prompt, num_images, guidance_scale, temperature, seed, use_plan):
        sent: list | None = None
        rendered: list = [None] * len(handler.models)  # the result list each grid was rendered from
        grids = [""] * len(handler.models)
        for update in handler.stream(prompt, num_images, guidance_scale, temperature, seed, use_plan):
            for m, result in enumerate(update.results):
                if result is not rendered[m]:
                    grids[m], rendered[m] = render_grid(result), result
            values = page_values(update, grids)
            yield values if sent is None else [skip() if v == old else v for v, old in zip(values, sent)]
            sent = values

    return generate


def quiet_limits(component, gr) -> None:
    """Make the range errors of an input ``component`` (Gradio raises ``gr.Error`` for a value outside its
    minimum / maximum) messages for the page only, not tracebacks in the server log."""
    check = component.preprocess

    def preprocess(value):
        try:
            return check(value)
        except gr.Error as err:
            raise gr.Error(err.message, print_exception=False) from None

    component.preprocess = preprocess


def build_app(handler: GenerationHandler, *, title: str = "T2I-R1", queue_size: int | None = 16,
              concurrency_limit: int | None = 1):
    """The page as a ``gr.Blocks``, its queue set (at most ``queue_size`` waiting, ``concurrency_limit`` running)."""
    gr = require_gradio()
    defaults = handler.default_image_config
    compare = len(handler.models) > 1
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {html.escape(title)}\nThe model first writes a **plan** of the image (its objects, their colours, "
            "shapes and places), then draws it. Each image has its own plan, printed under it."
        )
        for model in handler.models:
            if model.note:
                gr.HTML(f'<div class="t2i-note">{html.escape(model.name)}: {html.escape(model.note)}</div>',
                        elem_classes=["model-note"], js_on_load=None, css_template=NOTE_CSS)
        with gr.Row(equal_height=True):
            prompt = gr.Textbox(label="Prompt", placeholder="a red square to the left of a blue circle", lines=2, max_lines=6,
                                scale=5, elem_id="prompt", max_length=handler.max_prompt_chars)
            button = gr.Button("Generate", variant="primary", scale=1, elem_id="generate")
        with gr.Row():
            num_images = gr.Slider(1, handler.max_images, value=min(4, handler.max_images), step=1,
                                   label="Images", elem_id="num-images")
            guidance = gr.Slider(1.0, 10.0, value=defaults.guidance_scale, step=0.5, label="Guidance scale (CFG)",
                                 elem_id="guidance")
            temperature = gr.Slider(0.1, 2.0, value=defaults.temperature, step=0.05, label="Temperature (image tokens)",
                                    elem_id="temperature")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
            use_plan = gr.Checkbox(value=True, label="Plan before drawing", elem_id="use-plan")
        gr.Examples(EXAMPLE_PROMPTS, inputs=[prompt], label="Examples")
        status = gr.HTML(elem_id="status", js_on_load=None, css_template=STATUS_CSS)
        outputs = [status, None]
        with gr.Row(equal_height=False):
            for m, model in enumerate(handler.models):
                with gr.Column(elem_id=f"model-{m}"):
                    if compare:
                        gr.Markdown(f"### {html.escape(model.name)}")
                    plan_box = gr.Textbox(label="Plans (streamed as they are written)", lines=4, max_lines=14,
                                          interactive=False, elem_id=f"plans-{m}")
                    grid = gr.HTML(elem_id=f"images-{m}", js_on_load=None, css_template=GRID_CSS)
                    outputs += [plan_box, grid]
        outputs[1] = gr.File(label="Download: images + JSON of prompt, plans and settings", interactive=False,
                             height=80, elem_id="download")
        inputs = [prompt, num_images, guidance, temperature, seed, use_plan]
        for component in (num_images, guidance, temperature, seed):
            quiet_limits(component, gr)
        request = make_request_fn(handler, gr.skip)
        button.click(request, inputs=inputs, outputs=outputs, api_name="generate")
        prompt.submit(request, inputs=inputs, outputs=outputs, api_visibility="private")
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency_limit)
    return demo


def launch_options(host: str, port: int) -> dict:
    """Keyword arguments of ``demo.launch``: local only, no share link, no SSR, system fonts, no start-up
    banner (``quiet``: the command prints the address)."""
    gr = require_gradio()
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return dict(
        server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, ssr_mode=False, quiet=True,
        theme=gr.themes.Soft(font=system, font_mono=["ui-monospace", "monospace"]),
    )
