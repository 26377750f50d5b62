-- Time frames: a referral past due_at and not final gets one OVERDUE event; this records that
-- it was emitted, so it is emitted once.
ALTER TABLE referrals ADD COLUMN overdue_notified BIGINT NOT NULL DEFAULT 0;
CREATE INDEX referrals_awaiting_overdue ON referrals (due_at) WHERE overdue_notified = 0 AND due_at IS NOT NULL;
