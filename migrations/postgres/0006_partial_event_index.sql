-- Only information requests' events are looked up by information_request_id; a referral's
-- own events (NULL there) stay out of the index, so the planner walks the index by
-- referral for a referral's history instead of every NULL entry here.
DROP INDEX referral_events_by_information_request;
CREATE INDEX referral_events_by_information_request ON referral_events (information_request_id, seq)
    WHERE information_request_id IS NOT NULL;
