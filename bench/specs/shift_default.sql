-- Point-in-time extraction for the shift_default model (bench/shift_warehouse.py).
-- Bound parameters window_start and as_of; a label enters only once observed by the as-of date.
-- The table shift_truth (the probability each label was drawn with) is never read here.
SELECT app_id, customer_id, applied_at, observed_at, defaulted, channel, region,
       bureau_score, utilisation, debt_ratio, tenure_years, age, recent_inquiries
FROM shift_applications
WHERE applied_at >= :window_start
  AND applied_at < :as_of
  AND observed_at <= :as_of
ORDER BY applied_at, app_id
