"""sigman's web app: one photo + a pose -> an animatable 3D Gaussian avatar.

    python app.py                       # http://127.0.0.1:7860, CUDA when available
    python app.py --weights DIR         # official SIGMAN weights (or SIGMAN_WEIGHTS=DIR)
    python app.py --host 0.0.0.0 --viewer-host 0.0.0.0   # serve the app and its 3D viewers on the network

The page only describes the UI; what each button does lives in :mod:`sigman.app_logic`. On a
Hugging Face Space this file is the entry point (the runtime sets the host and port). On a
ZeroGPU Space (the ``spaces`` package is importable) each generation runs inside
``spaces.GPU``, which lends it a GPU for its duration; elsewhere nothing changes. The Space's
README (its card) is written by ``scripts/make_space_card.py``.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:  # Hugging Face ZeroGPU: `spaces` must be imported before torch touches CUDA
    import spaces  # noqa: F401
except ImportError:
    spaces = None

from sigman.app_logic import (  # noqa: E402
    MAX_SEED, MAX_STEPS, NO_MOTION, VIEWER_HOST_ENV, AppError, AvatarStudio, GenerationRequest, ViewerPool,
    example_photos, examples_dir, load_model, motion_choices, pose_choices, pose_thumbnails,
    thumbnails_dir,
)
from sigman.sampling import SAMPLERS  # noqa: E402

def _import_gradio():
    """``import gradio as gr`` for this module. ``python app.py`` calls it only after the model has
    loaded and its warm-up has started on a thread (:func:`main`), so that gradio's import (~5 s)
    overlaps the warm-up; importing ``app`` as a module imports gradio at once."""
    global gr
    import gradio as gr

    return gr


if __name__ != "__main__":
    _import_gradio()

TITLE = "sigman: one photo → an animatable 3D Gaussian avatar"
INTRO = ("Upload a photo of one person (plain background, or a mask), pick a pose and a motion, and get a 3D "
         "Gaussian-splat avatar: multi-view renders, a turntable, an animation, the splats in 3D, a live viewer "
         "to repose it, and the files: a standard 3DGS `.ply`, the rigged Gaussian `.glb`, and a skinned, textured "
         "mesh `.glb` for Blender, three.js and game engines (with the chosen motion as its animation).")
VIEWER_PLACEHOLDER = "<div class='viewer-note'>The live 3D viewer of your avatar appears here after a generation.</div>"
NO_VIEWER_NOTE = ("<div class='viewer-note'>The live viewer is off on this server. Download <code>avatar.glb</code> "
                  "and run <code>python -m viewer avatar.glb</code> to repose and animate the avatar.</div>")
KEEP_RESULTS_S = 6 * 3600  # results are deleted after this long (sigman's folders and Gradio's copies)
CSS = """
.viewer-note { padding: 2em; text-align: center; opacity: 0.7; }
.viewer-frame { width: 100%; height: 600px; border: 0; border-radius: 8px; background: #fff; }
#pose-gallery .caption-label { font-size: 0.8em; }
"""


def undecoded(image: gr.Image) -> gr.Image:
    """Let an image upload reach the app as its file path, undecoded, so that the app's own checks
    (not a decoder deep in Gradio) say what is wrong with a corrupt, huge or non-image file. (An
    override on the instance: subclassing a component makes Gradio write an ``app.pyi`` stub.)"""
    decode = image.preprocess

    def preprocess(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)  # Gradio has already checked that it is an upload
        return decode(payload)

    image.preprocess = preprocess
    return image


def viewer_html(url: Optional[str], enabled: bool) -> str:
    if not enabled:
        return NO_VIEWER_NOTE
    if url is None:
        return VIEWER_PLACEHOLDER
    src = html.escape(url, quote=True)
    return (f"<iframe class='viewer-frame' src='{src}' title='sigman 3D viewer' allow='fullscreen'></iframe>"
            f"<p><a href='{src}' target='_blank' rel='noopener'>Open the 3D viewer in its own tab ↗</a></p>")


GPU_SECONDS = 120  # the longest a ZeroGPU Space lends the GPU to one generation


def gpu_task(fn):
    """``fn`` wrapped in ``spaces.GPU`` (a ZeroGPU Space lends it a GPU while it runs) when the
    ``spaces`` package is importable; ``fn`` itself otherwise."""
    try:
        import spaces as zero_gpu
    except ImportError:
        return fn
    return zero_gpu.GPU(duration=GPU_SECONDS)(fn)


def on_zero_gpu() -> bool:
    """Whether this process is a ZeroGPU Space (CUDA only exists inside ``spaces.GPU`` calls)."""
    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def splat_view(value: Optional[str] = None, elem_id: str = "splats") -> gr.Model3D:
    """The page's 3D view of the Gaussians: Gradio's Model3D, which draws ``.ply``/``.splat`` files
    with gsplat.js (+Y down; sigman writes them so, see :mod:`sigman.io.frames`)."""
    return gr.Model3D(value=value, label="Gaussian splats (drag to orbit)", height=480, interactive=False,
                      elem_id=elem_id)


def build_demo(studio: AvatarStudio) -> gr.Blocks:
    """The page. ``studio`` runs the generations (tests pass one with a tiny model)."""
    defaults = studio.defaults
    viewer_enabled = studio.viewers is not None and studio.viewers.capacity > 0
    thumbnails = pose_thumbnails()

    # Gradio's copies of the results are deleted after KEEP_RESULTS_S (the examples and thumbnails stay)
    with gr.Blocks(title="sigman", analytics_enabled=False, delete_cache=(KEEP_RESULTS_S // 6, KEEP_RESULTS_S)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        if studio.model.banner:
            gr.Markdown(studio.model.banner, elem_id="weights-banner", container=True)

        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                photo = undecoded(gr.Image(label="Photo of a person", type="filepath", height=320,
                                           sources=["upload", "webcam", "clipboard"], elem_id="photo"))
                with gr.Accordion("Person mask (optional)", open=False):
                    mask = undecoded(gr.Image(label="Mask: white = person, black = background", type="filepath",
                                              sources=["upload", "clipboard"], height=200))
                gr.Examples(examples=[[p] for p in example_photos()], inputs=[photo], label="Example photos")

                gr.Markdown("### Pose")
                pose_gallery = gr.Gallery(value=thumbnails, columns=4, rows=2, height=250, object_fit="contain",
                                          allow_preview=False, show_label=False, interactive=False,
                                          elem_id="pose-gallery")
                pose = gr.Radio(pose_choices(), value="a_pose", label="Pose")
                pose_file = gr.File(label="…or upload an SMPL-X / AMASS pose (.npz; the first frame is used)",
                                    file_types=[".npz"], height=150)

                gr.Markdown("### Motion")
                motion = gr.Dropdown(motion_choices(), value="walk_cycle", label="Animate with")
                motion_file = gr.File(label="…or upload an SMPL-X / AMASS sequence (.npz)", file_types=[".npz"],
                                      height=150)
                motion_video = gr.Video(label="…or a video of a person moving (its first 20 s drive the avatar)",
                                        sources=["upload", "webcam"], height=200)

                refine = gr.Checkbox(value=True, label="Photo-faithful: make the seen side of the avatar the photo itself",
                                     elem_id="refine")

                with gr.Accordion("Sampling", open=False):
                    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    steps = gr.Slider(1, MAX_STEPS, value=defaults.steps, step=1, label="Steps")
                    guidance = gr.Slider(0.0, 10.0, value=defaults.guidance, step=0.1, label="Guidance")
                    sampler = gr.Radio(list(SAMPLERS), value=defaults.sampler, label="Sampler")
                generate = gr.Button("Generate avatar", variant="primary", elem_id="generate")

            with gr.Column(scale=3, min_width=400):
                summary = gr.Markdown("", elem_id="summary")
                views = gr.Image(label="Views", type="filepath", interactive=False, elem_id="views")
                input_view = gr.Image(label="The avatar from your photo's camera (hold it against the photo)",
                                      type="filepath", interactive=False, elem_id="input-view", height=320)
                with gr.Row():
                    turntable = gr.Video(label="Turntable", autoplay=True, loop=True, interactive=False)
                    animation = gr.Video(label="Motion", autoplay=True, loop=True, interactive=False)
                downloads = gr.File(label="Downloads: 3DGS avatar.ply, rigged avatar.glb, skinned mesh avatar_mesh.glb",
                                    file_count="multiple",
                                    interactive=False, elem_id="downloads")
                splats = splat_view()

        gr.Markdown("### Live viewer: repose and animate the avatar")
        viewer = gr.HTML(VIEWER_PLACEHOLDER if viewer_enabled else NO_VIEWER_NOTE, elem_id="viewer")

        def pick_pose(evt: gr.SelectData) -> str:
            return thumbnails[evt.index][1]

        def run(photo, mask, pose, pose_file, motion, motion_file, seed, steps, guidance, sampler,
                refine_photo=False, motion_video=None, request: gr.Request = None, progress=gr.Progress()):
            query = GenerationRequest(photo=photo, mask=mask, pose=pose, pose_file=pose_file,
                                      motion=motion or NO_MOTION, motion_file=motion_file, seed=int(seed or 0),
                                      steps=int(steps), guidance=float(guidance), sampler=sampler,
                                      refine=bool(refine_photo), motion_video=motion_video or None)
            try:
                # a wrapper (spaces.GPU) may hide the request hint from Gradio: then no session is known
                session = (request.session_hash or "") if request is not None else ""
                host = request.headers.get("host") if request is not None else None
                result = studio.generate(query, session=session,
                                         progress=lambda fraction, stage: progress(fraction, desc=stage),
                                         browser_host=host)
            except AppError as err:
                raise gr.Error(str(err), print_exception=False) from None
            path = lambda file: None if file is None else str(file)  # noqa: E731
            return (result.summary, path(result.views), path(result.turntable), path(result.motion),
                    viewer_html(result.viewer_url, viewer_enabled), path(result.preview),
                    [path(file) for file in result.downloads], path(result.input_view))

        run = gpu_task(run)

        def end_session(request: gr.Request) -> None:
            studio.end_session(request.session_hash or "")

        pose_gallery.select(pick_pose, None, pose, api_name=False)
        generate.click(run, [photo, mask, pose, pose_file, motion, motion_file, seed, steps, guidance, sampler,
                             refine, motion_video],
                       [summary, views, turntable, animation, viewer, splats, downloads, input_view], api_name="generate")
        demo.unload(end_session)
    return demo


def launch(demo: gr.Blocks, studio: AvatarStudio, host: Optional[str] = None, port: Optional[int] = None,
           share: bool = False, concurrency: int = 2, block: bool = True):
    """Queue and serve ``demo`` (``block=False`` returns at once, for tests)."""
    demo.queue(default_concurrency_limit=concurrency)
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                       quiet=not block, show_error=True, css=CSS,
                       allowed_paths=[str(studio.output_root), str(examples_dir()), str(thumbnails_dir())])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=None, help="address to serve on (default 127.0.0.1, or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--weights", default=None,
                        help="model folder (default: $SIGMAN_WEIGHTS, else assets/weights/demo)")
    parser.add_argument("--viewer-host", default=os.environ.get(VIEWER_HOST_ENV, "127.0.0.1"),
                        help="address the live 3D viewers bind to; the browser must reach it "
                             f"(default 127.0.0.1, or ${VIEWER_HOST_ENV})")
    parser.add_argument("--max-viewers", type=int, default=0 if os.environ.get("SPACE_ID") else 4,
                        help="live viewers at most (0: none; the default on Hugging Face Spaces, "
                             "which expose a single port)")
    parser.add_argument("--concurrency", type=int, default=2, help="generations that run at once")
    parser.add_argument("--no-optimize", action="store_true",
                        help="on CUDA, serve the plain pipeline (default: pipe.optimize(), warmed up at start)")
    args = parser.parse_args()

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sigman").setLevel(logging.INFO)
    model = load_model(args.weights, args.device)
    logging.getLogger("sigman.app").info("model: %s", model.description)
    if on_zero_gpu():  # no CUDA outside spaces.GPU calls: no warm-up at start
        args.no_optimize = True
    if args.max_viewers > 0:
        from viewer import launch_viewer

        viewers = ViewerPool(launch_viewer, args.viewer_host, args.max_viewers)
    else:
        viewers = None
    studio = AvatarStudio(model, viewers=viewers, keep_hours=KEEP_RESULTS_S / 3600)
    if not args.no_optimize and model.pipe is not None and model.pipe.device.type == "cuda":
        log = logging.getLogger("sigman.app")
        log.info("warming up the optimized sampler while the server starts (about a minute on a first start, "
                 "seconds with the compile cache)...")
        examples = example_photos()
        studio.warm_up_in_background(examples[0] if examples else None, log.info)
    _import_gradio()  # after the warm-up has started: the two overlap
    try:
        launch(build_demo(studio), studio, args.host, args.port, args.share, args.concurrency)
    finally:
        studio.close()


if __name__ == "__main__":
    main()
