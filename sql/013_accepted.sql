-- Messages accepted per client address, mail server and ten-minute slot, from the spool that the
-- QMAILQUEUE program (contrib/qmail/qguard-queue) appends to in front of qmail-queue: mail that
-- was delivered at once counts too, not only what is still in the queue. Kept beside the
-- connections of the same address and slot; first_seen/last_seen cover both.
ALTER TABLE qguard.connections ADD COLUMN accepted integer NOT NULL DEFAULT 0 CHECK (accepted >= 0);
