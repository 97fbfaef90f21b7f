"""Publishing: MQTT messages (``message``), the counts topics (``topics``), the durable outbox
(``outbox``), the connection that sends them (``publisher``) and Home Assistant discovery
(``homeassistant``)."""

from monitor.publishing.message import Message
from monitor.publishing.outbox import Outbox, OutboxError
from monitor.publishing.publisher import Publisher
from monitor.publishing.topics import CountsTopics

__all__ = ["CountsTopics", "Message", "Outbox", "OutboxError", "Publisher"]
