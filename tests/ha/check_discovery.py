"""Runs leakmon's Home Assistant discovery messages through Home Assistant's own code.

Input on stdin, one JSON document:
  {"prefix": "homeassistant",
   "configs": [{"topic": "...", "payload": "<the payload as published>"}, ...],
   "states": {"<state topic>": "<a payload published there>", ...},
   "may_be_unknown": ["<object id>", ...]}   (sensors whose source the node lacks, e.g. no
                                              temperature sensor: `None`, HA's unknown)

For each config, with the installed `homeassistant` package (scripts/test installs the last
release that runs on this machine's Python 3.11, 2024.3.3, into target/ha-venv):
  - the topic must match HA's discovery topic pattern (`discovery.TOPIC_MATCHER`);
  - the payload must pass `MQTT_ORIGIN_INFO_SCHEMA` and the component's `DISCOVERY_SCHEMA`
    (unknown keys inside `device` or `origin` fail there; unknown top-level keys are dropped
    by HA, so each key sent is also checked to be one HA keeps, except those newer releases
    added, listed below);
  - `value_template` rendered by HA's template engine on a real payload of the state topic
    must give a number (sensors) or `payload_on`/`payload_off` (binary sensors), and
    `availability_template` on the real status must give `payload_available`.
Prints one line per config and exits 1 if any failed.
"""

import asyncio
import copy
import importlib
import json
import sys
import tempfile

import voluptuous as vol
import homeassistant.const as hc
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template
from homeassistant.components.mqtt import abbreviations as ab
from homeassistant.components.mqtt import discovery

# Keys a newer Home Assistant reads that this one drops silently: `default_entity_id`
# (2025.10, which takes the entity id from it, `object_id` being ignored from 2026.4).
NEWER_KEYS = {"default_entity_id"}


def expand(p):
    p = {ab.ABBREVIATIONS.get(k, k): v for k, v in p.items()}
    if isinstance(p.get("device"), dict):
        p["device"] = {ab.DEVICE_ABBREVIATIONS.get(k, k): v for k, v in p["device"].items()}
    if isinstance(p.get("origin"), dict):
        p["origin"] = {ab.ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in p["origin"].items()}
    return p


def render(hass, template, payload):
    return Template(template, hass).async_render_with_possible_json_value(payload, "")


def check(hass, prefix, topic, raw, states, may_be_unknown):
    if not topic.startswith(prefix + "/"):
        return f"not under the discovery prefix {prefix}"
    m = discovery.TOPIC_MATCHER.fullmatch(topic[len(prefix) + 1:])
    if not m:
        return "the topic does not match Home Assistant's discovery pattern"
    component = m.group("component")
    payload = expand(json.loads(raw))
    if "origin" in payload:
        try:
            discovery.MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
        except vol.Invalid as e:
            return f"origin refused: {e}"
    mod = importlib.import_module(f"homeassistant.components.mqtt.{component}")
    try:
        kept = mod.DISCOVERY_SCHEMA(copy.deepcopy(payload))
    except vol.Invalid as e:
        return f"refused by {component}.DISCOVERY_SCHEMA: {e}"
    dropped = set(payload) - set(kept) - NEWER_KEYS
    if dropped:
        return f"keys Home Assistant drops: {sorted(dropped)}"
    state = states.get(payload["state_topic"])
    if state is None:
        return f"no real payload of {payload['state_topic']} to render with"
    value = render(hass, payload.get("value_template", "{{ value }}"), state).strip()
    if component == "sensor" and value == "None" and m.group("object_id") in may_be_unknown:
        value = "None (unknown: the node has no such source)"
    elif component == "sensor":
        try:
            float(value)
        except ValueError:
            return f"value_template gave {value!r}, not a number"
    else:
        if value not in (kept["payload_on"], kept["payload_off"]):
            return f"value_template gave {value!r}, neither payload_on nor payload_off"
    if "availability_topic" in payload:
        status = states.get(payload["availability_topic"])
        if status is None:
            return f"no real payload of {payload['availability_topic']}"
        a = render(hass, payload["availability_template"], status).strip()
        if a != kept["payload_available"]:
            return f"availability_template gave {a!r} on the status, not available"
    return f"ok: {value}"


async def main():
    doc = json.load(sys.stdin)
    hass = HomeAssistant(tempfile.mkdtemp())
    print(f"Home Assistant {hc.__version__}")
    failed = 0
    for c in doc["configs"]:
        verdict = check(
            hass, doc["prefix"], c["topic"], c["payload"], doc["states"],
            doc.get("may_be_unknown", []),
        )
        if not verdict.startswith("ok"):
            failed += 1
            verdict = "FAIL " + verdict
        print(f"{c['topic']}: {verdict}")
    await hass.async_stop(force=True)
    sys.exit(1 if failed else 0)


asyncio.run(main())
