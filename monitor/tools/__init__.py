"""Offline tools, apart from the daemon (which never imports them): the ice-store scene generator
(``icegen``), ``monitor dataset export`` (``dataset``), dataset import, fine-tuning and evaluation
(``training``) and the zone set-up picture ``monitor snapshot`` (``snapshot``)."""
