#!/usr/bin/env python3
"""Record a real session of the `raftlite` shell and draw it as an SVG (docs/img/shell.svg).

It starts a single raftlited node on a free port in a temporary directory, runs the shell on a
pseudo-terminal (90 x 32), types a few commands, waiting for the prompt before each as a person
would, and replays what the shell wrote through a minimal terminal emulator (carriage return,
newline, erase-line, cursor-forward; other escape sequences are dropped) into the picture.

    cargo build && python3 docs/img/shell-picture.py target/debug docs/img/shell.svg
"""

import fcntl
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
import urllib.request

COLS, ROWS = 90, 32


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(url, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit("node not ready")


class Session:
    """What the shell wrote, and how far the script has read it."""

    def __init__(self, fd):
        self.fd, self.data, self.pos = fd, b"", 0

    def expect(self, needle, timeout=20):
        end = time.time() + timeout
        while True:
            i = self.data.find(needle, self.pos)
            if i >= 0:
                self.pos = i + len(needle)
                return
            left = end - time.time()
            if left <= 0:
                sys.exit("timed out waiting for %r; got %r" % (needle, self.data[-300:]))
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    sys.exit("the shell exited")
                self.data += chunk


def emulate(data):
    """Replay terminal output into lines of text."""
    lines, row, col = [""], 0, 0
    text = data.decode("utf-8", "replace")
    i = 0
    csi = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = csi.match(text, i)
            if m:
                arg, cmd = m.group(1), m.group(2)
                if cmd == "K":
                    lines[row] = lines[row][:col]
                elif cmd == "C":
                    col += int(arg or "1")
                i = m.end()
                continue
            i += 2
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif ch >= " ":
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return lines


def svg(lines, path):
    lines = lines[-ROWS:]
    cw, lh, pad = 8.4, 18, 14
    width = int(COLS * cw + 2 * pad)
    height = int(len(lines) * lh + 2 * pad + 24)
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">' % (width, height, width, height),
        '<rect width="100%%" height="100%%" rx="8" fill="#1e1e2e"/>',
        '<circle cx="18" cy="14" r="5" fill="#f38ba8"/><circle cx="34" cy="14" r="5" fill="#f9e2af"/><circle cx="50" cy="14" r="5" fill="#a6e3a1"/>',
        '<g font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="14" fill="#cdd6f4">',
    ]
    for n, line in enumerate(lines):
        y = pad + 24 + (n + 1) * lh - 4
        colour = "#89b4fa" if "> " in line and line.split("> ")[0].count(":") == 1 else "#cdd6f4"
        out.append('<text x="%d" y="%d" xml:space="preserve" fill="%s">%s</text>' % (pad, y, colour, esc(line.rstrip())))
    out.append("</g></svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    bindir, dest = os.path.abspath(sys.argv[1]), sys.argv[2]
    tmp = tempfile.mkdtemp()
    http, raft = free_port(), free_port()
    node = subprocess.Popen(
        [os.path.join(bindir, "raftlited"), "-http-addr", "127.0.0.1:%d" % http, "-raft-addr", "127.0.0.1:%d" % raft, os.path.join(tmp, "data")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready("http://127.0.0.1:%d" % http)
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.update({"TERM": "xterm", "LANG": "C.UTF-8", "HOME": tmp, "NO_COLOR": "1"})
            os.chdir(tmp)
            os.execv(os.path.join(bindir, "raftlite"), ["raftlite", "-p", str(http)])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        prompt = b"127.0.0.1:%d> " % http
        session = Session(fd)
        session.expect(prompt)
        # Each command, and what its answer ends with (then the next prompt follows).
        for line, answer in [
            ("CREATE TABLE people (id INTEGER PRIMARY KEY,", b"...> "),
            ("  name TEXT, born INTEGER);", b"0 rows affected"),
            ("INSERT INTO people(name, born) VALUES ('Ada Lovelace', 1815),", b"...> "),
            ("  ('Alan Turing', 1912), ('Grace Hopper', NULL);", b"3 rows affected"),
            (".timer on", None),
            ("SELECT id, name, born FROM people ORDER BY born;", b"(on the node)"),
            (".nodes", "┘".encode()),
            (".backup people.db", b"bytes written"),
        ]:
            os.write(fd, line.encode() + b"\r")
            time.sleep(0.3)
            if answer is not None:
                session.expect(answer)
            if answer != b"...> ":
                session.expect(prompt)
        os.write(fd, b"\x04")
        time.sleep(0.3)
        svg(emulate(session.data), dest)
    finally:
        node.terminate()
        node.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
