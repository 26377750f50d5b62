-- One batch of SubmitReferral write sets, as the writer commits them at best: :n submissions
-- in one transaction, one multi-row statement per table (referral, its event, its outbox row,
-- its idempotency record, its audit entry and target), under the writers' advisory lock.
-- scripts/bench-pg-ceiling.sh runs it; docs/benchmarks.md has the numbers.
\set k random(1, 4000000000000000000)
BEGIN;
SELECT pg_advisory_xact_lock(4242);
INSERT INTO referrals (id, from_agency, to_agency, request_id, service_code, category, priority, status, due_at, created_at, updated_at, body)
  SELECT :k || '-' || g, 'family-court', 'police', 'rq-' || :k || '-' || g, 'protection-order', 'REFERRAL_CATEGORY_DOMESTIC_VIOLENCE', 'REFERRAL_PRIORITY_URGENT', 'REFERRAL_STATUS_SUBMITTED', 1796774399999, 1796000000000, 1796000000000, convert_to(repeat('x', 600), 'UTF8') FROM generate_series(1, :n) g;
INSERT INTO referral_events (referral_id, from_agency, to_agency, event_type, status, actor_agency, reason_code, note, outcome, occurred_at)
  SELECT :k || '-' || g, 'family-court', 'police', 'REFERRAL_EVENT_TYPE_SUBMITTED', 'REFERRAL_STATUS_SUBMITTED', 'family-court', 'STATUS_REASON_UNSPECIFIED', '', 'REFERRAL_OUTCOME_UNSPECIFIED', 1796000000000 FROM generate_series(1, :n) g;
INSERT INTO outbox (delivery_id, agency, kind, subject_id, payload, traceparent, state, attempts, next_attempt_at, created_at, updated_at, last_error, receipt_id)
  SELECT 'd-' || :k || '-' || g, 'police', 'referral', :k || '-' || g, convert_to(repeat('y', 700), 'UTF8'), '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'pending', 0, 1796000000000, 1796000000000, 1796000000000, '', '' FROM generate_series(1, :n) g;
INSERT INTO idempotency_keys (agency, request_id, method, request_sha256, response, created_at)
  SELECT 'family-court', 'rq-' || :k || '-' || g, 'jisr.v1.ReferralService/SubmitReferral', sha256(convert_to(g::text, 'UTF8')), convert_to(repeat('z', 800), 'UTF8'), 1796000000000 FROM generate_series(1, :n) g;
INSERT INTO audit_entries (log_id, leaf_index, time_ms, caller_agency, method, decision, targets, entry, leaf_hash)
  SELECT 'ceiling-' || :k, g, 1796000000000, 'family-court', '/jisr.v1.ReferralService/SubmitReferral', 'ALLOW', ' ' || :k || '-' || g || ' ', convert_to(repeat('e', 600), 'UTF8'), sha256(convert_to(g::text, 'UTF8')) FROM generate_series(1, :n) g;
INSERT INTO audit_targets (log_id, target_id, leaf_index)
  SELECT 'ceiling-' || :k, :k || '-' || g, g FROM generate_series(1, :n) g;
COMMIT;
