-- The platform tenant stays (keys and events refer to it), and stripped
-- scopes cannot be given back: nothing to undo.
SELECT 1;
