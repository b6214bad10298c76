"""Which ``tf.distribute`` strategy a run trains under, and which of its processes writes the run folder.

Four distributions, by name (``kerasemote train ... --distribution NAME``):

* ``none``: one device, no ``tf.distribute`` strategy;
* ``mirrored``: every GPU of this machine (``MirroredStrategy``);
* ``multi-worker``: every GPU (or the CPU) of several machines or processes
  (``MultiWorkerMirroredStrategy``); each process reads its cluster and its own place in
  it from the ``TF_CONFIG`` environment variable, for example
  ``{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}``;
* ``tpu``: the cores of a Cloud TPU (``TPUStrategy``): a TPU VM (``local``, Colab's TPU
  runtime) or a TPU node at ``grpc://HOST:PORT``.

Every process runs the same loop on the same global batch, which is a pure function of
(seed, step); replica ``r`` of ``R`` computes rows ``r * B/R ... (r + 1) * B/R - 1`` of it and
the gradients are summed over all replicas, so R replicas train what one device trains on
the whole batch. Only the chief (``task.type`` ``chief``, else worker 0) holds the run folder's
lock and writes checkpoints, outputs and logs; the other workers read the chief's checkpoints
to resume and write nothing, so the run folder must be one that every worker reads
(``gs://`` or a shared file system).

Example:
    >>> dist = make_distribution("multi-worker")   # TF_CONFIG set, before any other TensorFlow work
    >>> with dist.scope():
    ...     model = load_model("sd-v1-5")
    >>> train(model, FineTune(), data, TrainConfig(steps=1000, batch_size=64), "gs://b/run", distribution=dist)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, ContextManager, Mapping

import tensorflow as tf

from kerasemote.training import runlock

DISTRIBUTIONS = ("none", "mirrored", "multi-worker", "tpu")
TF_CONFIG = "TF_CONFIG"
COLAB_TPU_ADDR = "COLAB_TPU_ADDR"  # set by Colab's TPU-node runtime: "HOST:PORT"
TPU_NAME = "TPU_NAME"  # the TPU name or address Cloud TPU tools set
_ROLES = ("chief", "worker")  # task types that train; evaluators and parameter servers have no place here
_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
            '"index": 0}}')


class DistributionError(ValueError):
    """A distribution that cannot start: unknown name, missing or malformed TF_CONFIG, no TPU."""


def make_distribution(name: str, tpu: str | None = None) -> tf.distribute.Strategy | None:
    """The ``tf.distribute`` strategy called ``name`` (one of ``DISTRIBUTIONS``); None for ``none``.

    Create it before any other TensorFlow work of the process: ``multi-worker`` sets up
    collective ops and ``tpu`` the TPU system, which TensorFlow allows only at program start.

    Args:
        name: ``none``, ``mirrored``, ``multi-worker`` or ``tpu``.
        tpu: ``tpu`` only: the TPU's name or ``grpc://`` address, or ``local`` for a TPU VM;
            default from the environment (``tpu_address``).

    Returns:
        The strategy; build the model under its ``scope()`` and pass it to ``train``.

    Raises:
        DistributionError: one line naming what is wrong and what is expected.
    """
    if tpu is not None and name != "tpu":
        raise DistributionError(f"--tpu {tpu}: expected only with --distribution tpu, found --distribution {name}.")
    if name == "none":
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        read_tf_config()  # TensorFlow reads it again; this names what is wrong in one line
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu_address(tpu))
    raise DistributionError(f"--distribution: expected one of {', '.join(DISTRIBUTIONS)}, found {name!r}.")


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``TF_CONFIG`` of a multi-worker run, checked: a cluster of ``host:port`` workers and this task's place.

    Returns:
        The parsed JSON: ``cluster`` (``worker`` and optionally one ``chief``: lists of
        ``host:port``) and ``task`` (``type`` ``worker`` or ``chief``, ``index`` into that list).

    Raises:
        DistributionError: TF_CONFIG is missing, not JSON, or a field is missing or wrong.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG, "").strip()
    if not raw:
        raise DistributionError(f"{TF_CONFIG}: not set; --distribution multi-worker expects it in every worker's "
                                f"environment, e.g. {_EXAMPLE}.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DistributionError(f"{TF_CONFIG}: expected JSON such as {_EXAMPLE}, found {raw[:80]!r} ({err.msg} "
                                f"at character {err.pos}).") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(cluster.get("worker", cluster.get("chief")), list):
        raise DistributionError(f"{TF_CONFIG}: key 'cluster' expected an object with a 'worker' list of "
                                f"\"host:port\", found {_short(cluster)}.")
    for role, addresses in cluster.items():
        if role not in _ROLES:
            raise DistributionError(f"{TF_CONFIG}: key 'cluster.{role}' expected only 'worker' and 'chief' "
                                    "(every task trains), found it.")
        if not isinstance(addresses, list) or not addresses or not all(_is_address(a) for a in addresses):
            raise DistributionError(f"{TF_CONFIG}: key 'cluster.{role}' expected a list of \"host:port\", "
                                    f"found {_short(addresses)}.")
    if len(cluster.get("chief", [])) > 1:
        raise DistributionError(f"{TF_CONFIG}: key 'cluster.chief' expected one address, found "
                                f"{len(cluster['chief'])}.")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DistributionError(f"{TF_CONFIG}: key 'task' expected {{\"type\": one of {sorted(cluster)}, "
                                f"\"index\": N}}, found {_short(task)}.")
    count, index = len(cluster[task["type"]]), task.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise DistributionError(f"{TF_CONFIG}: key 'task.index' expected an integer from 0 to {count - 1} (the "
                                f"{count} '{task['type']}' addresses), found {_short(index)}.")
    return config


def is_chief_task(tf_config: Mapping[str, Any]) -> bool:
    """Whether a (checked) ``TF_CONFIG`` names the chief: the ``chief`` task, else worker 0."""
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def is_chief(distribution: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the run folder: always, except on the non-chief workers of a multi-worker run."""
    if not isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = distribution.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:  # no TF_CONFIG: this process is the whole cluster
        return True
    return is_chief_task({"cluster": cluster, "task": {"type": resolver.task_type, "index": resolver.task_id}})


def tpu_address(tpu: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Which TPU ``--distribution tpu`` connects to.

    Args:
        tpu: a TPU name, a ``grpc://HOST:PORT`` address or ``local``; when None, the
            environment decides: Colab's TPU-node runtime sets ``COLAB_TPU_ADDR``
            (``grpc://`` is put in front), Cloud TPU tools set ``TPU_NAME``, and otherwise the
            TPU is this machine's own (``local``: a TPU VM, as in Colab's TPU runtime).
    """
    environ = os.environ if environ is None else environ
    if tpu:
        return tpu
    if environ.get(COLAB_TPU_ADDR):
        return "grpc://" + environ[COLAB_TPU_ADDR]
    return environ.get(TPU_NAME) or "local"


def claim_run_folder(out_dir: str, distribution: tf.distribute.Strategy | None, resume: object = False,
                     overwrite: bool = False, force: bool = False) -> ContextManager[bool]:
    """``runlock.claim`` on the chief; on other workers nothing to hold (they never write the folder).

    Yields:
        Whether to clear the previous run's files (never on a non-chief worker).
    """
    if is_chief(distribution):
        return runlock.claim(out_dir, resume, overwrite, force)
    return contextlib.nullcontext(False)


def distribution_scope(distribution: tf.distribute.Strategy | None) -> ContextManager:
    """The scope to build the model in: the strategy's, or the default one."""
    return (distribution or tf.distribute.get_strategy()).scope()


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":  # a TPU VM's cores are this process's own devices: no cluster to join
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise DistributionError(f"--distribution tpu: expected a TPU at {address!r} (--tpu NAME|grpc://HOST:PORT|"
                                f"local), found none: {first[:200]}") from None
    return tf.distribute.TPUStrategy(resolver)


def _is_address(value: object) -> bool:
    host, colon, port = str(value).rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(host and colon and port.isdigit())


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
