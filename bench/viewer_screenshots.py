#!/usr/bin/env python
"""Screenshots of a stage-one shard in the real general-purpose HDF5 viewers, for docs/viewing.md:

- ``viewer_silx.png``: ``silx view``'s own window (silx.app.view.Viewer) under Xvfb, on the image group
  ``/images/<id>``, its NXdata colour view, with Y0 picked in "Select signal" (``--kind refined``: the refined label);
- ``viewer_h5web.png``: JupyterLab with jupyterlab-h5web, served on 127.0.0.1 only, in headless Chromium: the shard
  double-clicked in the file browser, then ``images`` > ``<id>`` > ``initial_rgb`` clicked in h5web's explorer.

    python bench/viewer_screenshots.py [SHARDS] [--out docs/img] [--image chelsea] [--kind initial|refined]

SHARDS defaults to ``outputs/demo`` (``tools/gen_pseudo.sh demo``). Run it with a Python that has silx, a Qt binding,
JupyterLab and jupyterlab-h5web (none of them a project dependency), e.g.::

    python3 -m venv /tmp/viewers
    /tmp/viewers/bin/pip install silx PyQt5 qtawesome PyOpenGL jupyterlab jupyterlab-h5web
    apt-get install xvfb xauth chromium libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0   # the last three: Qt's xcb
    /tmp/viewers/bin/python bench/viewer_screenshots.py --image chelsea
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (1280, 820)

# Run by xvfb-run in a child process: silx view's main window on one node, grabbed from the X server's screen.
SILX_CHILD = r"""
import sys, h5py
from silx.gui import qt
from silx.gui.hdf5 import Hdf5TreeView
from silx.gui.data._SignalSelector import SignalSelector
from silx.app.view.Viewer import Viewer
path, node, signal, png, width, height = sys.argv[1:5] + [int(sys.argv[5]), int(sys.argv[6])]
app = qt.QApplication([])
viewer = Viewer()
viewer.resize(width, height)
viewer.show()
viewer.appendFile(path)
app.processEvents()
handle = h5py.File(path, "r")
def select():   # as a user clicks the node in the tree, then picks the signal in the plot's "Select signal" box
    viewer.findChild(Hdf5TreeView).setSelectedH5Node(handle[node])
    viewer.displaySelectedData()
    qt.QTimer.singleShot(2000, pick_signal)
def pick_signal():
    for selector in viewer.findChildren(SignalSelector):
        if selector.isVisible():
            selector._combobox.setCurrentIndex(int(signal))
    qt.QTimer.singleShot(3000, grab)
def grab():
    app.primaryScreen().grabWindow(viewer.winId()).save(png)
    app.quit()
qt.QTimer.singleShot(2000, select)
app.exec()
"""


def first_image(path: Path) -> str:
    import h5py

    with h5py.File(path, "r") as handle:
        return next(iter(handle["images"]))


def silx_screenshot(shard: Path, node: str, png: Path, signal: int = 0) -> None:
    """silx view's window showing ``node`` of ``shard`` (an NXdata group: its ``signal``-th signal, 0 the main one,
    1 the first auxiliary one), saved to ``png``."""
    if shutil.which("xvfb-run") is None:
        sys.exit("xvfb-run not found: apt-get install xvfb xauth")
    with tempfile.TemporaryDirectory() as home:    # fresh silx preferences (image orientation 'upward', its default)
        environment = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "QT_QPA_PLATFORM": "xcb"}
        # the window's title shows the path as given: relative to the checkout, as a user types it there
        subprocess.run(["xvfb-run", "-a", "-s", f"-screen 0 {SIZE[0]}x{SIZE[1]}x24", sys.executable, "-c",
                        SILX_CHILD, os.path.relpath(shard, REPO), node, str(signal), str(png.resolve()),
                        str(SIZE[0]), str(SIZE[1])], env=environment, cwd=REPO, check=True, timeout=300)
    print(f"silx: {png}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chromium() -> str:
    found = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    if found is None:
        sys.exit("chromium not found: apt-get install chromium")
    return found


def chromium_screenshot(url: str, png: Path, ready: str, clicks: tuple[tuple[str, int], ...] = (),
                        timeout: float = 120) -> None:
    """Load ``url`` in headless Chromium, click each ``(CSS selector, 1 or 2 clicks)`` of ``clicks`` in turn when
    its element is laid out (as a user opens a file and picks an item), and save a screenshot once the JavaScript
    expression ``ready`` is true (and 3 s more for drawing), through the DevTools protocol (websocket-client, a
    JupyterLab dependency)."""
    import base64
    import json

    import websocket

    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             "--hide-scrollbars", f"--window-size={SIZE[0]},{SIZE[1]}", f"--remote-debugging-port={port}",
             "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pages = wait_for(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list")), 60)
            page = websocket.create_connection(next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"],
                                               timeout=60)
            calls = iter(range(1, 1 << 30))

            def call(method: str, **params):
                number = next(calls)
                page.send(json.dumps({"id": number, "method": method, "params": params}))
                while (answer := json.loads(page.recv())).get("id") != number:
                    pass
                return answer.get("result", {})

            def evaluate(expression: str):
                return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

            call("Emulation.setDeviceMetricsOverride", width=SIZE[0], height=SIZE[1], deviceScaleFactor=1,
                 mobile=False)
            call("Page.navigate", url=url)
            for selector, count in clicks:
                box = json.loads(wait_for(lambda: evaluate(   # once laid out (its box has a width)
                    f"(r => r && r.width > 0 && JSON.stringify(r))"
                    f"(document.querySelector('{selector}')?.getBoundingClientRect())"), timeout))
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                time.sleep(2)                               # its handlers come a moment after it is drawn
                call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
                for number in range(1, count + 1):
                    for kind in ("mousePressed", "mouseReleased"):
                        call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=number)
            try:
                wait_for(lambda: evaluate(ready), timeout)
                time.sleep(3)
            finally:   # also when the view never came: the picture shows what did
                png.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
            page.close()
        finally:
            browser.terminate()
            browser.wait(timeout=30)


def wait_for(probe, timeout: float):
    """``probe()``'s first truthy result, trying once a second; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := probe():
                return result
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"gave up after {timeout:.0f} s")


def h5web_screenshot(shard: Path, png: Path, path: str | None = None) -> None:
    """JupyterLab's H5Web viewer on ``shard`` (served on 127.0.0.1 only), in headless Chromium, saved to ``png``:
    what it opens the file on, or the HDF5 ``path`` picked in its explorer."""
    port = free_port()
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as home:
        shutil.copyfile(shard, Path(root, shard.name))     # JupyterLab serves no link leading outside its root
        settings = Path(home, "settings", "@jupyterlab", "apputils-extension")
        settings.mkdir(parents=True)                        # no "Jupyter news?" pop-up over the view
        (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
        environment = {**os.environ, "HOME": home, "JUPYTER_CONFIG_DIR": str(Path(home, "config")),
                       "JUPYTERLAB_SETTINGS_DIR": str(Path(home, "settings")),
                       "JUPYTERLAB_WORKSPACES_DIR": str(Path(home, "workspaces"))}
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--IdentityProvider.token=", f"--ServerApp.root_dir={root}"],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2), 120)
            # double-click the shard in JupyterLab's file browser, then each level of path in h5web's explorer
            clicks = [('.jp-DirListing-item[data-file-type="hdf5file"]', 2)]
            parts = path.strip("/").split("/") if path else []
            clicks += [(f'button[role="treeitem"][data-path="/{"/".join(parts[:n])}"]', 1)
                       for n in range(1, len(parts) + 1)]
            chromium_screenshot(f"http://127.0.0.1:{port}/lab", png, "document.querySelector('canvas') !== null",
                                tuple(clicks))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"h5web: {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", nargs="?", type=Path, default=REPO / "outputs" / "demo",
                        help="stage-one output directory (default: outputs/demo)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go (docs/img)")
    parser.add_argument("--image", help="image id to show (default: the first shard's first image)")
    parser.add_argument("--kind", choices=("initial", "refined"), default="initial",
                        help="label map to show (default: initial, Y0, which keeps the photo's structure even with "
                             "the demo's random weights)")
    args = parser.parse_args()
    shards = sorted(args.shards.glob("shard-*.h5"))
    if not shards:
        sys.exit(f"no shard-*.h5 in '{args.shards}': run tools/gen_pseudo.sh demo first")
    try:
        import jupyterlab_h5web  # noqa: F401
        import silx.gui.qt  # noqa: F401
    except ImportError as error:
        sys.exit(f"{error.name} is missing: pip install silx PyQt5 qtawesome PyOpenGL jupyterlab jupyterlab-h5web")
    shard = shards[0]
    image = args.image or first_image(shard)
    args.out.mkdir(parents=True, exist_ok=True)
    # silx: the image group's NXdata view (signal 0 the refined label, 1 Y0); h5web: the rendering itself
    silx_screenshot(shard, f"/images/{image}", args.out / "viewer_silx.png", signal=int(args.kind == "initial"))
    h5web_screenshot(shard, args.out / "viewer_h5web.png", f"/images/{image}/{args.kind}_rgb")


if __name__ == "__main__":
    main()
