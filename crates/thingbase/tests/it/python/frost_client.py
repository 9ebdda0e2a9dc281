"""Drives a Thingbase server with the real `frost_sta_client` library from PyPI.

Usage: python3 frost_client.py <service root URL>. Exits non-zero (with a traceback) when the
library cannot create, read, query, update or delete what it should.
"""

import sys

import frost_sta_client as fsc
import geojson

service = fsc.SensorThingsService(sys.argv[1])

location = fsc.Location(
    name="Roof",
    description="Roof of building 1",
    encoding_type="application/geo+json",
    location=geojson.Point((8.4, 49.0)),
)
thing = fsc.Thing(name="Weather station", description="On the roof", properties={"owner": "Ada"}, locations=[location])
service.create(thing)
assert thing.id is not None, "the Location header gave the new Thing's id"

sensor = fsc.Sensor(name="PT100", description="thermometer", encoding_type="text/plain", metadata="-")
observed_property = fsc.ObservedProperty(name="Temperature", definition="http://example.org/temp", description="air")
unit = fsc.UnitOfMeasurement(name="degree Celsius", symbol="°C", definition="ucum:Cel")
datastream = fsc.Datastream(
    name="Air temperature",
    description="2 m above the roof",
    observation_type="http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
    unit_of_measurement=unit,
    thing=thing,
    sensor=sensor,
    observed_property=observed_property,
)
service.create(datastream)

for i in range(25):
    service.create(fsc.Observation(result=20 + i, phenomenon_time=f"2024-05-01T12:{i:02d}:00Z", datastream=datastream))

things = service.things().query().filter("name eq 'Weather station'").list()
assert len(things.entities) == 1, things.entities

# Paging through all Observations follows @iot.nextLink.
observations = service.observations().query().top(10).list()
seen = [o.result for o in observations]
assert sorted(seen) == list(range(20, 45)), seen

warm = service.datastreams().find(datastream.id).get_observations().query().filter("result gt 40").list()
assert sorted(o.result for o in warm) == [41, 42, 43, 44], [o.result for o in warm]

thing.description = "Moved to the cellar"
service.update(thing)
assert service.things().find(thing.id).description == "Moved to the cellar"

service.delete(thing)
assert len(service.datastreams().query().list().entities) == 0, "the Thing's Datastreams went with it"
print("frost_sta_client: ok")
