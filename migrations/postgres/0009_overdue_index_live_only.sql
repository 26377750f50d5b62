-- The overdue sweep's index held every referral never marked overdue, final ones included:
-- a referral completed before its due date stayed in it for good, and each sweep walked all
-- of them past their due dates. Now it holds only referrals that can still become overdue
-- (the predicate is the sweep's own WHERE, so the planner uses it).
DROP INDEX referrals_awaiting_overdue;
CREATE INDEX referrals_awaiting_overdue ON referrals (due_at)
    WHERE overdue_notified = 0 AND due_at IS NOT NULL
    AND status NOT IN ('REFERRAL_STATUS_COMPLETED', 'REFERRAL_STATUS_REJECTED', 'REFERRAL_STATUS_WITHDRAWN', 'REFERRAL_STATUS_FAILED');
