-- Revision 0012, downgrade to 0011: pggcl.explain goes. Frozen once released.
DROP FUNCTION pggcl.explain(bigint, integer);
