"""A prefork server otel-reliability does not know: this script spawns two uvicorn servers on one socket.

``python own_server.py PORT`` (under opentelemetry-instrument): each worker answers for itself.
"""

import multiprocessing
import socket
import sys

import uvicorn


def serve(sock: socket.socket) -> None:
    uvicorn.Server(uvicorn.Config("app:app", log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=serve, args=(listener,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
