-- Rows the credit_default champion scores: every application made in the interval, with its
-- features as of the application time, exactly as the training query computes them, and no label
-- (outcomes arrive months later). Bound parameters window_start and as_of, as in
-- credit_default.sql (a colon-name in a comment would count as a parameter, so none appears here).
SELECT
    a.application_id,
    c.region,
    c.age,
    c.income,
    c.employment_years,
    a.amount,
    a.term_months,
    a.purpose,
    a.channel,
    a.credit_score,
    a.existing_debt,
    (SELECT COUNT(*)
       FROM applications p
      WHERE p.customer_id = a.customer_id
        AND p.applied_at < a.applied_at) AS prior_applications,
    (SELECT COUNT(*)
       FROM applications p
       JOIN outcomes po ON po.application_id = p.application_id
      WHERE p.customer_id = a.customer_id
        AND p.applied_at < a.applied_at
        AND po.observed_at < a.applied_at
        AND po.defaulted = 1) AS prior_defaults_observed
FROM applications a
JOIN customers c ON c.customer_id = a.customer_id
WHERE a.applied_at >= :window_start
  AND a.applied_at < :as_of
