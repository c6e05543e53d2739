"""containerd's API (gRPC over HTTP/2 on its unix socket), as much of it as naming containers needs:
the namespaces, and each container's labels and image. Plain sockets, no gRPC library: requests
are one HTTP/2 stream each, their headers sent as HPACK literals; the answer is the stream's DATA
(one gRPC message), and a stream that ends without one (containerd's "not found", or any other
error status, which is in the headers this client does not decode) is no answer.
"""

from __future__ import annotations

import socket
import struct

from ._containers import TIMEOUT, Found, Runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Containerd"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
# Most bytes one answer may be (a list of containers carries each one's OCI spec).
_MAX_ANSWER = 64 << 20

_NAMESPACES = "/containerd.services.namespaces.v1.Namespaces/List"
_GET = "/containerd.services.containers.v1.Containers/Get"
_LIST = "/containerd.services.containers.v1.Containers/List"


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def _header(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name, no Huffman coding (RFC 7541 6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    return b"\0" + _hpack_int(len(raw_name), 7) + raw_name + _hpack_int(len(raw_value), 7) + raw_value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append(value & 127 | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_field(number: int, value: str) -> bytes:
    raw = value.encode()
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """A protobuf message's fields in order: (number, int or bytes)."""
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            if at >= len(message):
                raise OSError("a truncated protobuf message")
            byte = message[at]
            at += 1
            value |= (byte & 127) << shift
            shift += 7
            if byte < 128:
                return value

    while at < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            length = varint()
            yield number, message[at : at + length]
            at += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, message[at : at + size]
            at += size
        else:
            raise OSError(f"protobuf wire type {wire} is not understood")


def _text(value: int | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else ""


def _container(message: bytes) -> Found:
    """A ``containerd.services.containers.v1.Container``: id 1, labels 2 (a map), image 3."""
    id, image, labels = "", "", {}
    for number, value in _fields(message):
        if number == 1:
            id = _text(value)
        elif number == 3:
            image = _text(value)
        elif number == 2 and isinstance(value, bytes):
            entry = dict(_fields(value))
            labels[_text(entry.get(1, b""))] = _text(entry.get(2, b""))
    return Found(id, None, image, labels)


class Containerd(Runtime):
    """containerd: its containers in every namespace (``k8s.io`` holds the CRI's). A container has
    no name of its own here: a Kubernetes container's is its CRI label."""

    name, env, default = "containerd", "CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"

    def _call(self, method: str, request: bytes, namespace: str | None = None) -> bytes | None:
        """One unary call: the answer's message, or None when the call ended without one."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(self.socket)
            headers = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "localhost"),
                       ("content-type", "application/grpc"), ("te", "trailers")]
            if namespace is not None:
                headers.append(("containerd-namespace", namespace))
            block = b"".join(_header(n, v) for n, v in headers)
            message = b"\0" + struct.pack(">I", len(request)) + request
            sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0, b"") + _frame(_HEADERS, _END_HEADERS, 1, block)
                         + _frame(_DATA, _END_STREAM, 1, message))
            return self._answer(sock)
        finally:
            sock.close()

    def _answer(self, sock: socket.socket) -> bytes | None:
        buffer = bytearray()

        def read(n: int) -> bytes:
            chunks = bytearray()
            while len(chunks) < n:
                chunk = sock.recv(n - len(chunks))
                if not chunk:
                    raise OSError("containerd closed the connection mid-answer")
                chunks += chunk
            return bytes(chunks)

        while True:
            head = read(9)
            length = int.from_bytes(head[:3], "big")
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFF_FFFF
            payload = read(length)
            if kind == _SETTINGS and not flags & _ACK:
                sock.sendall(_frame(_SETTINGS, _ACK, 0, b""))
            elif kind == _PING and not flags & _ACK:
                sock.sendall(_frame(_PING, _ACK, 0, payload))
            elif kind in (_GOAWAY, _RST_STREAM) and stream in (0, 1):
                raise OSError("containerd refused the call")
            elif kind == _DATA and stream == 1:
                buffer += payload
                if len(buffer) > _MAX_ANSWER:
                    raise OSError("containerd's answer is too long")
                if length and not flags & _END_STREAM:
                    # Room for the rest of the answer, in the stream and the connection.
                    grant = struct.pack(">I", length)
                    sock.sendall(_frame(_WINDOW_UPDATE, 0, 0, grant) + _frame(_WINDOW_UPDATE, 0, 1, grant))
            if stream == 1 and kind in (_DATA, _HEADERS) and flags & _END_STREAM:
                break
        if len(buffer) < 5:
            return None
        size = int.from_bytes(buffer[1:5], "big")
        return bytes(buffer[5 : 5 + size])

    def _namespaces(self) -> list[str]:
        answer = self._call(_NAMESPACES, b"") or b""
        names = []
        for number, value in _fields(answer):
            if number == 1 and isinstance(value, bytes):
                names += [_text(v) for n, v in _fields(value) if n == 1]
        # The CRI's first: a node's containers are mostly Kubernetes pods'.
        return sorted(names, key=lambda n: n != "k8s.io")

    def running(self) -> list[Found]:
        found = []
        for namespace in self._namespaces():
            for number, value in _fields(self._call(_LIST, b"", namespace) or b""):
                if number == 1 and isinstance(value, bytes):
                    found.append(_container(value))
        return found

    def find(self, key: str) -> Found | None:
        namespaces = self._namespaces()
        for namespace in namespaces:
            answer = self._call(_GET, _string_field(1, key), namespace)
            for number, value in _fields(answer or b""):
                if number == 1 and isinstance(value, bytes):
                    return _container(value)
        if len(key) == 64:
            return None
        # By a Kubernetes container's name, or an id's start: unique, or nothing.
        matches = [f for f in self.running() if f.id.startswith(key) or f.name == key]
        return matches[0] if len({f.id for f in matches}) == 1 else None

