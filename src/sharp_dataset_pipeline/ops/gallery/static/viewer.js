// Offline 3D viewer of one Gaussian splat PLY, on the PlayCanvas engine bundled beside this file.
// The canvas carries the PLY's URL in data-src; its data-state says how far the viewer got
// ("starting", "loading", "ready" after the first frame with the splat, or "error: ...").
// Drag to orbit, wheel to zoom. SHARP's PLY uses OpenCV axes (x right, y down, z forward), so the
// splat is turned 180 degrees about x and the camera looks at it from the photo's viewpoint.
import * as pc from './playcanvas.min.mjs';

const canvas = document.getElementById('splat-viewer');
const status = document.getElementById('viewer-status');

function setState(state, message) {
  canvas.dataset.state = state;
  if (status) status.textContent = message || '';
}

function fail(message) {
  setState('error: ' + message, 'The 3D viewer could not start: ' + message + '. Showing the rendered preview instead.');
  // A blank 520 px canvas would push the message off-screen: the still preview takes its place.
  canvas.style.display = 'none';
  const hint = document.getElementById('viewer-hint');
  if (hint) hint.style.display = 'none';
  if (canvas.dataset.preview && !document.getElementById('viewer-fallback')) {
    const still = document.createElement('img');
    still.id = 'viewer-fallback';
    still.className = 'preview';
    still.src = canvas.dataset.preview;
    still.alt = 'rendered splat (the 3D viewer could not start)';
    (status || canvas).after(still);
  }
}

function orbitCamera(app, camera, target, distance) {
  let yaw = 0, pitch = 0, dist = distance, dragging = false, lastX = 0, lastY = 0;
  const place = () => {
    const q = new pc.Quat().setFromEulerAngles(pitch, yaw, 0);
    const offset = q.transformVector(new pc.Vec3(0, 0, dist));
    camera.setPosition(target.x + offset.x, target.y + offset.y, target.z + offset.z);
    camera.lookAt(target);
  };
  canvas.addEventListener('pointerdown', (e) => { dragging = true; lastX = e.clientX; lastY = e.clientY; });
  window.addEventListener('pointerup', () => { dragging = false; });
  window.addEventListener('pointermove', (e) => {
    if (!dragging) return;
    yaw -= (e.clientX - lastX) * 0.3;
    pitch = Math.max(-85, Math.min(85, pitch - (e.clientY - lastY) * 0.3));
    lastX = e.clientX; lastY = e.clientY;
    place();
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    dist = Math.max(distance * 0.05, dist * Math.exp(e.deltaY * 0.001));
    place();
  }, { passive: false });
  place();
}

function start() {
  if (location.protocol === 'file:') {
    fail('browsers do not let a page opened from a file read the splat; run "sharp-dataset gallery --serve"');
    return;
  }
  let app;
  try {
    app = new pc.Application(canvas, { graphicsDeviceOptions: { antialias: false, alpha: false } });
  } catch (err) {
    fail('no WebGL: ' + err.message);
    return;
  }
  app.setCanvasFillMode(pc.FILLMODE_NONE);
  app.setCanvasResolution(pc.RESOLUTION_AUTO);
  window.addEventListener('resize', () => app.resizeCanvas());

  const camera = new pc.Entity('camera');
  camera.addComponent('camera', { clearColor: new pc.Color(0.08, 0.08, 0.1), fov: 50, nearClip: 0.01, farClip: 1000 });
  app.root.addChild(camera);

  const depth = parseFloat(canvas.dataset.depth || '2');
  const asset = new pc.Asset('splat', 'gsplat', { url: canvas.dataset.src });
  asset.on('error', (err) => fail(String(err)));
  asset.ready(() => {
    const splat = new pc.Entity('splat');
    splat.addComponent('gsplat', { asset });
    splat.setLocalEulerAngles(180, 0, 0);
    app.root.addChild(splat);
    // The photo's camera sits at the origin; orbit around a point at the scene's typical depth.
    orbitCamera(app, camera, new pc.Vec3(0, 0, -depth), depth);
    app.once('frameend', () => setState('ready', ''));
  });
  setState('loading', 'Loading the splat...');
  app.assets.add(asset);
  app.assets.load(asset);
  app.start();
}

setState('starting', '');
start();
