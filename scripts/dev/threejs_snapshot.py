"""Screenshots of a mesh avatar (``avatar_mesh.glb``) playing its animation in three.js, in
headless Chromium: what a three.js app shows. Needs ``cd tests/js && npm ci`` and Chromium.

    python scripts/dev/threejs_snapshot.py outputs/gen/avatar_mesh.glb --out outputs/threejs.png

Writes one PNG with the avatar at four moments of its first animation clip, side by side.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = """<!doctype html><html><body style="margin:0;background:#fff">
<script type="importmap">{"imports": {"three": "./three/build/three.module.js",
                                      "three/addons/": "./three/examples/jsm/"}}</script>
<script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
const renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
renderer.setSize(320, 480); renderer.setClearColor(0xffffff); document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.add(new THREE.HemisphereLight(0xffffff, 0x888888, 2.5));
const camera = new THREE.PerspectiveCamera(35, 320 / 480, 0.1, 20);
const gltf = await new GLTFLoader().loadAsync("./avatar_mesh.glb");
scene.add(gltf.scene);
const box = new THREE.Box3().setFromObject(gltf.scene), centre = box.getCenter(new THREE.Vector3());
camera.position.set(centre.x + 1.2, centre.y + 0.2, centre.z + 3.6); camera.lookAt(centre);
const mixer = new THREE.AnimationMixer(gltf.scene);
const clip = gltf.animations[0];
if (clip) mixer.clipAction(clip).play();
window.frameAt = (fraction) => {
  mixer.setTime((clip ? clip.duration : 0) * fraction);
  renderer.render(scene, camera);
  return renderer.domElement.toDataURL("image/png");
};
window.ready = true;
</script></body></html>"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("glb", type=Path)
    parser.add_argument("--out", type=Path, default=Path("threejs.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    three = REPO / "tests" / "js" / "node_modules" / "three"
    if not three.is_dir():
        raise SystemExit("three.js is missing: cd tests/js && npm ci")
    import base64
    import io

    from PIL import Image
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "index.html").write_text(PAGE)
        shutil.copy(args.glb, root / "avatar_mesh.glb")
        (root / "three").symlink_to(three)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=[
                    "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
                page = browser.new_page()
                page.on("console", lambda m: print("page:", m.text))
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                page.wait_for_function("() => window.ready === true", timeout=120_000)
                frames = [Image.open(io.BytesIO(base64.b64decode(page.evaluate(f"() => frameAt({f})").split(",")[1])))
                          for f in (0.0, 0.25, 0.5, 0.75)]
                browser.close()
        finally:
            server.shutdown()
    strip = Image.new("RGB", (sum(f.width for f in frames), frames[0].height), "white")
    for i, frame in enumerate(frames):
        strip.paste(frame.convert("RGB"), (i * frame.width, 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
