-- import-spamlist: the relay/trust rules on their own, so an import of a million-entry list can
-- fetch them (to drop list entries lying inside them) without reading every deny rule. They
-- are few; the million are deny rules. A partial index costs a deny insert nothing.
CREATE INDEX rules_relay_trust ON qguard.rules USING btree (network) WHERE action IN ('relay', 'trust');
