"""Class sets by id: registered once, their prompts encoded once and kept.

A class set is a :class:`~awt.spec.ClassifierSpec` built with the server's settings (views, seed,
decoding, cache folder); its id is ``spec.key()``, so the same names, descriptions and template
get the same id whether registered or named inline, and a server started with the same settings
finds a registered set again after a restart (its definition is kept beside the prompt cache).
The encoded prompts live on the set's classifier, built on the model's thread (the engine), and in
the on-disk prompt cache.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import AWTError
from ..files import WriteError, atomic_write_text
from ..spec import ClassifierSpec
from .settings import Limits

_log = logging.getLogger(__name__)
_ID = re.compile(r"[0-9a-f]{24}")


@dataclass(eq=False)
class ClassSet:
    id: str
    spec: ClassifierSpec
    origin: str                   # "startup", "registered" or "inline"
    name: str | None = None
    classifier: Any = None        # its AWTClassifier, built on the model's thread

    def describe(self, names: bool = False) -> dict[str, Any]:
        doc = {"id": self.id, "name": self.name, "origin": self.origin, "classes": len(self.spec.classes),
               "descriptions_per_class": self.spec.descriptions_per_class, "template": self.spec.template}
        if names:
            doc["names"] = list(self.spec.classes)
        return doc


class ClassSets:
    """The server's class sets: the one it started with, those registered (at most
    ``limits.max_class_sets``), and the last ``inline`` ones named in requests."""

    def __init__(self, make_spec: Callable[..., ClassifierSpec], limits: Limits, store: Path | None,
                 inline: int = 32):
        self._make_spec, self.limits, self._store = make_spec, limits, store
        self._registered: dict[str, ClassSet] = {}
        self._inline: collections.OrderedDict[str, ClassSet] = collections.OrderedDict()
        self._inline_size = inline
        self._lock = threading.Lock()
        self.default: ClassSet | None = None

    def spec(self, classes: Sequence[str], descriptions: Any = None, template: str | None = None,
             descriptions_per_class: int | None = None, allow_fewer_descriptions: bool = False) -> ClassifierSpec:
        """A spec with the server's settings; an AWTError for what the library refuses."""
        fields: dict[str, Any] = {"descriptions": descriptions, "descriptions_per_class": descriptions_per_class,
                                  "allow_fewer_descriptions": allow_fewer_descriptions}
        if template is not None:
            fields["template"] = template
        return self._make_spec(list(classes), **fields)

    def start_with(self, spec: ClassifierSpec, name: str | None) -> ClassSet:
        self.default = ClassSet(spec.key(), spec, "startup", name)
        return self.default

    def inline(self, classes: Sequence[str], template: str | None = None) -> ClassSet:
        """The set of classes a request names (no descriptions), kept among the last few."""
        if len(classes) > self.limits.max_classes:
            raise AWTError(f"{len(classes)} classes named in the request, more than the limit of "
                           f"{self.limits.max_classes}", setting="max_classes", kind="limit",
                           hint="register them as a class set, or raise {max_classes}")
        spec = self.spec(classes, template=template)
        key = spec.key()
        with self._lock:
            found = self._find(key)
            if found is None:
                found = self._inline[key] = ClassSet(key, spec, "inline")
                while len(self._inline) > self._inline_size:
                    self._inline.popitem(last=False)
            elif key in self._inline:
                self._inline.move_to_end(key)
            return found

    def get(self, set_id: str) -> ClassSet:
        """The set of this id (from memory, else from its kept definition); AWTError ``missing``."""
        with self._lock:
            found = self._find(set_id)
        if found is None and self._store is not None and _ID.fullmatch(set_id):
            found = self._load(set_id)
        if found is None:
            raise AWTError(f"no class set {set_id!r} on this server", setting="class_set", kind="missing",
                           hint="register it first (POST /v1/class-sets), or name the classes inline")
        return found

    def _find(self, set_id: str) -> ClassSet | None:
        if self.default is not None and self.default.id == set_id:
            return self.default
        return self._registered.get(set_id) or self._inline.get(set_id)

    def prepare(self, spec: ClassifierSpec, name: str | None) -> tuple[ClassSet, bool]:
        """The registered set of ``spec`` if there is one (False), else a new one to build and
        :meth:`add` (True). Refused past ``max_set_classes`` classes or ``max_class_sets`` sets."""
        if len(spec.classes) > self.limits.max_set_classes:
            raise AWTError(f"{len(spec.classes)} classes, more than the limit of {self.limits.max_set_classes} "
                           "for a class set", setting="max_set_classes", kind="limit", hint="raise {max_set_classes}")
        key = spec.key()
        with self._lock:
            found = self._find(key)
            if found is not None and found.origin != "inline":
                return found, False
            if len(self._registered) >= self.limits.max_class_sets:
                raise AWTError(f"{len(self._registered)} class sets are registered, the limit", kind="limit",
                               setting="max_class_sets", hint="raise {max_class_sets}")
        return ClassSet(key, spec, "registered", name), True

    def add(self, class_set: ClassSet) -> None:
        """Keep a registered set (its classifier built), and its definition on disk."""
        with self._lock:
            self._registered[class_set.id] = class_set
            self._inline.pop(class_set.id, None)
        if self._store is not None:
            s = class_set.spec
            doc = {"name": class_set.name, "classes": list(s.classes),
                   "descriptions": None if s.descriptions is None else [list(d) for d in s.descriptions],
                   "descriptions_per_class": s.descriptions_per_class,
                   "allow_fewer_descriptions": s.allow_fewer_descriptions, "template": s.template}
            try:
                atomic_write_text(self._store / f"{class_set.id}.json", json.dumps(doc, ensure_ascii=False))
            except WriteError as e:   # kept in memory all the same
                _log.warning(f"{e}; class set {class_set.id} is kept until the server stops")

    def _load(self, set_id: str) -> ClassSet | None:
        path = self._store / f"{set_id}.json"
        try:
            doc = json.loads(path.read_text())
            spec = self.spec(doc["classes"], doc.get("descriptions"), doc.get("template"),
                             doc.get("descriptions_per_class"), bool(doc.get("allow_fewer_descriptions")))
        except (OSError, ValueError, KeyError, TypeError, AWTError):
            return None
        if spec.key() != set_id:   # kept by a server with other settings: not the same results
            return None
        class_set = ClassSet(set_id, spec, "registered", doc.get("name"))
        with self._lock:
            if len(self._registered) >= self.limits.max_class_sets:
                return None
            return self._registered.setdefault(set_id, class_set)

    def registered(self) -> list[ClassSet]:
        with self._lock:
            return ([self.default] if self.default else []) + list(self._registered.values())
