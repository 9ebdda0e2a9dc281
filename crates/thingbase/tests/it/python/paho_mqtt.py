"""Drives Thingbase's MQTT side with the real `paho-mqtt` library from PyPI.

Usage: python3 paho_mqtt.py <host> <tcp port> <http port> <datastream id>. For MQTT 3.1.1 and
5.0, over TCP and over WebSocket (`/mqtt` on the HTTP port), it subscribes to the Datastream's
Observations topic, publishes an Observation at QoS 1, and checks the PUBACK and the
notification. With MQTT 5 it also checks that an invalid Observation is refused with the
PUBACK reason code "payload format invalid" and that the connection stays usable. Exits
non-zero with a message when anything is off.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, tcp_port, http_port, datastream = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
topic = f"v1.1/Datastreams({datastream})/Observations"
TIMEOUT = 10


def run(protocol, transport, result):
    name = f"{'v5' if protocol == mqtt.MQTTv5 else 'v311'}-{transport}"
    connected, subscribed = threading.Event(), threading.Event()
    acks, notifications = {}, []
    ack_event, note_event = threading.Condition(), threading.Condition()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{name}", protocol=protocol, transport=transport)
    if transport == "websockets":
        client.ws_set_options(path="/mqtt")

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        if reason_code != 0:
            sys.exit(f"{name}: CONNECT refused: {reason_code}")
        connected.set()

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
        if any(code.is_failure for code in reason_codes):
            sys.exit(f"{name}: SUBSCRIBE refused: {reason_codes}")
        subscribed.set()

    def on_publish(_client, _userdata, mid, reason_code, _properties):
        with ack_event:
            acks[mid] = reason_code
            ack_event.notify_all()

    def on_message(_client, _userdata, message):
        with note_event:
            notifications.append((message.topic, json.loads(message.payload)))
            note_event.notify_all()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_publish, client.on_message = on_publish, on_message
    client.connect(host, http_port if transport == "websockets" else tcp_port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(TIMEOUT):
            sys.exit(f"{name}: no CONNACK")
        client.subscribe(topic, qos=1)
        if not subscribed.wait(TIMEOUT):
            sys.exit(f"{name}: no SUBACK")

        def publish(payload):
            info = client.publish(topic, payload, qos=1)
            with ack_event:
                if not ack_event.wait_for(lambda: info.mid in acks, TIMEOUT):
                    sys.exit(f"{name}: no PUBACK for {payload}")
                return acks[info.mid]

        if protocol == mqtt.MQTTv5:
            code = publish(json.dumps({"result": 1, "phenomenonTime": "yesterday"}))
            if code.value != 0x99:
                sys.exit(f"{name}: an invalid Observation got PUBACK {code}, not 'Payload format invalid'")
        marker = f"{name}-ok"
        code = publish(json.dumps({"result": marker}))
        if code.is_failure:
            sys.exit(f"{name}: a valid Observation was refused: {code}")
        with note_event:
            if not note_event.wait_for(lambda: any(body.get("result") == marker for _, body in notifications), TIMEOUT):
                sys.exit(f"{name}: no notification of the new Observation; got {notifications}")
        result.append(name)
    finally:
        client.disconnect()
        client.loop_stop()


done = []
for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
    for transport in ("tcp", "websockets"):
        run(protocol, transport, done)
print("ok:", ", ".join(done))
