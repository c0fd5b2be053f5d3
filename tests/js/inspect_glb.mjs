// Load a .glb with three.js's GLTFLoader (in node) and report what a three.js app would get:
// skinned meshes, their bones, the texture, the animation clips, and skinned vertex positions
// at given times of the first clip (AnimationMixer + SkinnedMesh.getVertexPosition, i.e. the
// CPU twin of three.js's skinning shader).
//
//   node inspect_glb.mjs FILE.glb [SAMPLE_STRIDE] [TIME ...]   -> JSON on stdout
import { readFileSync } from "node:fs";
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

// node has no DOM: GLTFLoader decodes embedded images through createImageBitmap; this stand-in
// reads the PNG header (size) and checks the signature, which is all the report needs.
globalThis.self ??= globalThis;
globalThis.navigator ??= { userAgent: "node" };
globalThis.createImageBitmap = async (blob) => {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const png = [137, 80, 78, 71, 13, 10, 26, 10].every((b, i) => bytes[i] === b);
  if (!png) throw new Error("embedded image is not a PNG");
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  return { width: view.getUint32(16), height: view.getUint32(20), close() {} };
};

const [file, strideArg, ...timeArgs] = process.argv.slice(2);
const stride = Number(strideArg ?? 100);
const raw = readFileSync(file);
const gltf = await new GLTFLoader().parseAsync(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength), "");

const skinned = [], points = [];
gltf.scene.traverse((o) => {
  if (o.isSkinnedMesh) skinned.push(o);
  if (o.isPoints) points.push(o);
});
const report = {
  skinnedMeshes: skinned.length,
  points: points.length,
  animations: gltf.animations.map((c) => ({ name: c.name, duration: c.duration, tracks: c.tracks.length })),
};
if (skinned.length) {
  const mesh = skinned[0];
  const map = mesh.material.map;
  report.bones = mesh.skeleton.bones.length;
  report.boneNames = mesh.skeleton.bones.slice(0, 3).map((b) => b.name);
  report.vertices = mesh.geometry.attributes.position.count;
  report.texture = map ? { width: map.image.width, height: map.image.height, colorSpace: map.colorSpace } : null;
  report.hasUV = !!mesh.geometry.attributes.uv;
  const mixer = new THREE.AnimationMixer(gltf.scene);
  if (gltf.animations.length) mixer.clipAction(gltf.animations[0]).play();
  const v = new THREE.Vector3();
  report.frames = [];
  for (const t of timeArgs.map(Number)) {
    mixer.setTime(t);
    gltf.scene.updateMatrixWorld(true);
    const positions = [];
    for (let i = 0; i < report.vertices; i += stride) {
      mesh.getVertexPosition(i, v);
      v.applyMatrix4(mesh.matrixWorld);
      positions.push([v.x, v.y, v.z]);
    }
    report.frames.push({ time: t, positions });
  }
}
process.stdout.write(JSON.stringify(report));
