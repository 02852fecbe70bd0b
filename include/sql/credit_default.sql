-- Point-in-time extraction for the credit_default model.
-- Bound parameters window_start and as_of (values are never formatted into the text;
-- a colon-name in a comment would count as a parameter, so none appears here).
-- * features are as of the application time (customer tenure, prior applications and
--   defaults that were *observed* before the application);
-- * a label enters only if it was observed by the as-of date (label maturity);
-- * no application at or after the as-of date enters.
SELECT
    a.application_id,
    a.customer_id,
    a.applied_at,
    o.observed_at,
    o.defaulted,
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
JOIN outcomes o ON o.application_id = a.application_id
WHERE a.applied_at >= :window_start
  AND a.applied_at < :as_of
  AND o.observed_at <= :as_of
ORDER BY a.applied_at, a.application_id
