"""A tiny RTSP server for tests: serves an MJPEG AVI file at rtsp://127.0.0.1:PORT/cam, optionally only to a
client that logs in (HTTP Basic, as IP cameras do): ``... PORT FILE USER PASSWORD``.

Runs under the system Python (Debian's python3-gi + gir1.2-gst-rtsp-server-1.0), not the project's,
so tests start it as a subprocess: ``/usr/bin/python3 tests/rtsp_server.py PORT FILE [USER PASSWORD]``.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, path = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{path}" ! avidemux ! rtpjpegpay name=pay0 pt=96 )')
    factory.set_shared(True)
    if len(sys.argv) > 4:
        require_login(server, factory, sys.argv[3], sys.argv[4])
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print(f"serving rtsp://127.0.0.1:{port}/cam", flush=True)
    GLib.MainLoop().run()


def require_login(server, factory, user: str, password: str) -> None:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "camera-user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    role = "camera-user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    permissions.add_role_from_structure(Gst.Structure.from_string(role)[0])
    factory.set_permissions(permissions)


if __name__ == "__main__":
    main()
