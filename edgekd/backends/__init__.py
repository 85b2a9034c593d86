"""Runtimes that run the exported student: one package per runtime (ort/, qnn/, tensorrt/), each
registering its backend (edgekd.backends.base.register) under the runtime name a target file gives;
edgekd.backends.registry loads them all and picks one."""
