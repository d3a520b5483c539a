"""Writes the tiny data-set pickles the plastic-vision tests read (so the tests need no
Python). Run from this folder with Python 3 and numpy:  python make_pickles.py

Every valid file holds {'data': uint8 array (6, 2, 2, 3), 'labels': LABELS} with
data.flat[i] = (37 * i + 11) % 256.
  py3_protocol2.pickle   pickle.dump(..., protocol=2): payload via _codecs.encode(str, 'latin1')
  py3_protocol4.pickle   protocol 4: payload as SHORT_BINBYTES, FRAME, MEMOIZE, STACK_GLOBAL
  py3_protocol5.pickle   protocol 5: numpy's _frombuffer with an in-band BYTEARRAY8
  py2_protocol2.pickle   what Python 2 + numpy 1.x wrote (the MetaOptNet files): protocol 2,
                         payload as a BINSTRING str, module numpy.core.multiarray, written
                         byte by byte below and checked to load with encoding='latin1'
  py3_numpy_labels.pickle protocol 4 with labels = list(np.array(LABELS)) (numpy int64 scalars)
Invalid on purpose:
  bad_float32.pickle     data of dtype float32
  bad_3d.pickle          data of shape (6, 2, 6)
"""
import pickle
import struct

import numpy as np

LABELS = [3, 3, 70000, 70000, 300, 300]
SHAPE = (6, 2, 2, 3)
DATA = np.array([(37 * i + 11) % 256 for i in range(int(np.prod(SHAPE)))], dtype=np.uint8).reshape(SHAPE)


def dump(name, obj, protocol):
    with open(name, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def python2_pickle(data, labels):
    """Protocol 2 as Python 2's cPickle writes a dict of a numpy array and a list."""
    out = bytearray(b"\x80\x02")
    memo = [0]

    def put():
        out.extend(b"q" + bytes([memo[0]]))
        memo[0] += 1

    def short_str(s):
        out.extend(b"U" + bytes([len(s)]) + s)
        put()

    out.extend(b"}")
    put()
    out.extend(b"(")
    short_str(b"data")
    out.extend(b"cnumpy.core.multiarray\n_reconstruct\n")
    put()
    out.extend(b"cnumpy\nndarray\n")
    put()
    out.extend(b"K\x00\x85")
    put()
    short_str(b"b")
    out.extend(b"\x87")
    put()
    out.extend(b"R")
    put()
    out.extend(b"(K\x01(")
    for d in data.shape:
        out.extend(b"K" + bytes([d]))
    out.extend(b"t")
    put()
    out.extend(b"cnumpy\ndtype\n")
    put()
    short_str(b"u1")
    out.extend(b"K\x00K\x01\x87")
    put()
    out.extend(b"R")
    put()
    out.extend(b"(K\x03")
    short_str(b"|")
    out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t")
    put()
    out.extend(b"b\x89")
    raw = data.tobytes()
    out.extend(b"T" + struct.pack("<i", len(raw)) + raw)  # BINSTRING: a Python 2 str
    put()
    out.extend(b"t")
    put()
    out.extend(b"b")
    short_str(b"labels")
    out.extend(b"]")
    put()
    out.extend(b"(")
    for v in labels:
        if v < 256:
            out.extend(b"K" + bytes([v]))
        elif v < 65536:
            out.extend(b"M" + struct.pack("<H", v))
        else:
            out.extend(b"J" + struct.pack("<i", v))
    out.extend(b"eu.")
    return bytes(out)


def check(name, encoding="ASCII"):
    with open(name, "rb") as f:
        d = pickle.load(f, encoding=encoding)
    assert d["data"].dtype == np.uint8 and d["data"].shape == SHAPE, name
    assert (d["data"] == DATA).all(), name
    assert [int(v) for v in d["labels"]] == LABELS, name


good = {"data": DATA, "labels": LABELS}
dump("py3_protocol2.pickle", good, 2)
dump("py3_protocol4.pickle", good, 4)
dump("py3_protocol5.pickle", good, 5)
with open("py2_protocol2.pickle", "wb") as f:
    f.write(python2_pickle(DATA, LABELS))
dump("py3_numpy_labels.pickle", {"data": DATA, "labels": list(np.array(LABELS))}, 4)
dump("bad_float32.pickle", {"data": DATA.astype(np.float32), "labels": LABELS}, 4)
dump("bad_3d.pickle", {"data": DATA.reshape(6, 2, 6), "labels": LABELS}, 4)

for name in ["py3_protocol2.pickle", "py3_protocol4.pickle", "py3_protocol5.pickle", "py3_numpy_labels.pickle"]:
    check(name)
check("py2_protocol2.pickle", encoding="latin1")  # as the reference loads Python 2 pickles
print("ok")
