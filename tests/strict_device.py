"""A stand-in GPU backend for machines without one: NumPy arrays that behave as strictly as CuPy's.

``DeviceArray`` is an ndarray subclass that, like a CuPy array,
- refuses NumPy API functions (``np.concatenate(x)``, ``np.add.at`` …): array code must use
  ``xp = get_array_module(x)``;
- refuses arithmetic with host ``numpy.ndarray`` operands (CuPy raises TypeError on mixing);
- refuses implicit host conversion and synchronisation (``.item()``, ``float(x)``, ``int(x)``,
  ``.tolist()``, ``bool(x)``).

``strict_xp`` is the module ``get_array_module`` returns for it (installed as ``sys.modules["cupy"]``
by the fixture): every function unwraps its arguments, calls NumPy and wraps the results.
"""

from __future__ import annotations

import types

import numpy as np

from backends import Backend


class DeviceArray(np.ndarray):
    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"numpy.{func.__name__}() called on a device array; use xp = get_array_module(x)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for value in inputs + tuple(kwargs.get("out", ())):
            if type(value) is np.ndarray and value.ndim > 0:
                raise TypeError(f"{ufunc.__name__}: a host numpy array mixed with a device array")
        if method == "at":
            raise TypeError(f"{ufunc.__name__}.at: scatter with duplicates differs between backends")
        plain = [v.view(np.ndarray) if isinstance(v, DeviceArray) else v for v in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(v.view(np.ndarray) if isinstance(v, DeviceArray) else v for v in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*plain, **kwargs))

    def _refuse(self, *args, **kwargs):
        raise TypeError("implicit device-to-host transfer (item/float/int/bool/tolist) of a device array")

    item = tolist = __float__ = __int__ = __bool__ = __index__ = _refuse


def _unwrap(value):
    if isinstance(value, DeviceArray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _wrap(value):
    if type(value) is np.ndarray:
        return value.view(DeviceArray)
    if isinstance(value, np.generic):  # CuPy reductions give 0-d device arrays, not host scalars
        return np.asarray(value).view(DeviceArray)
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _function(name):
    target = getattr(np, name)

    def call(*args, **kwargs):
        for value in list(args) + list(kwargs.values()):
            if type(value) is np.ndarray and value.ndim > 0 and name not in ("asarray", "array"):
                raise TypeError(f"xp.{name}: a host numpy array passed where a device array is expected")
        return _wrap(target(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    return call


def _as_strided(x, shape, strides):
    if not isinstance(x, DeviceArray):
        raise TypeError("xp.lib.stride_tricks.as_strided: a host array passed where a device array is expected")
    return np.lib.stride_tricks.as_strided(x.view(np.ndarray), shape=shape, strides=strides).view(DeviceArray)


class _StrictModule(types.ModuleType):
    ndarray = DeviceArray
    lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=_as_strided))

    def __getattr__(self, name):
        value = getattr(np, name)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes, constants
        return _function(name)

    @staticmethod
    def asnumpy(a):
        return np.array(a.view(np.ndarray))


strict_xp = _StrictModule("strict_cupy")

strict_backend = Backend(
    name="strict",
    xp=strict_xp,
    to_device=lambda a: np.array(a).view(DeviceArray),
    to_host=lambda a: np.array(a.view(np.ndarray)),
    synchronize=lambda: None,
)
