DROP TABLE product_requests;
--bun:split
DROP TABLE trials;
--bun:split
DROP TABLE entitlements;
