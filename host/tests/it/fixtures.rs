//! Fixtures shared by several integration test modules.

/// A table with a column of every type the decoder knows (and a few it does not), the
/// extension types the test servers ship (hstore, citext, ltree, isn: contrib, in Debian's
/// postgresql-15 and in every npm build of the matrix) and composite types: nested, in
/// arrays, behind a domain, with a dropped attribute and a quoted field name.
pub const TYPES_DDL: &str = "
CREATE EXTENSION hstore; CREATE EXTENSION citext; CREATE EXTENSION ltree; CREATE EXTENSION isn;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN short_text AS varchar(20);
CREATE TYPE holding AS (quantity numeric(10,2), instrument_code text);
CREATE TYPE position_t AS (h holding, hs hstore, lots holding[], at timestamptz,
  \"Quoted Name\" int, m mood, d posint, f float8, raw bytea, tags text[]);
CREATE DOMAIN holding_d AS holding CHECK ((VALUE).quantity IS NULL OR (VALUE).quantity > -1000);
CREATE TYPE dropped_t AS (a int, gone text, b text);
ALTER TYPE dropped_t DROP ATTRIBUTE gone;
CREATE TABLE typed (
  id int PRIMARY KEY,
  b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, num numeric, num_s numeric(12,4),
  t text, vc varchar(10), bp char(5), nm name, ch \"char\", by bytea, js json, jb jsonb, u uuid,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  a_i4 int4[], a_t text[], a_2d int4[][], a_num numeric[], a_ts timestamptz[], a_b bool[],
  e mood, a_e mood[], dom posint, dom_t short_text, ip inet, pt point, bits bit varying, x xml,
  hs hstore, a_hs hstore[], ci citext, lt ltree, isb isbn13, comp holding, a_comp holding[],
  nest position_t, dcomp holding_d, dr dropped_t
);";

/// Every column of `typed` that has a binary decoder (or, like `isb`, no send function, so
/// the server sends its text even in binary mode): all of them.
pub const BINARY_DECODED: &str = "id, b, i2, i4, i8, f4, f8, num, num_s, t, vc, bp, nm, ch, by, js, jb, u, d, tm, ttz, ts, tstz, iv, a_i4, a_t, a_2d, a_num, a_ts, a_b, e, a_e, dom, dom_t, ip, pt, bits, x, hs, a_hs, ci, lt, isb, comp, a_comp, nest, dcomp, dr";

pub const TYPES_ROWS: &str = r#"
INSERT INTO typed VALUES
 (1, true, 32767, -2147483648, 9223372036854775807, 1.5, 0.1, 123456789012345678901234567890.123456789, 1.5,
  'plain', 'varchar', 'ab', 'a_name', 'x', '\x00ff10', '{"b": 1, "a": [1, 2.50, "x"]}', '{"b": 1, "a": [1, 2.50, "x"]}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '2024-02-29', '23:59:59.999999', '10:20:30+05:30', '2024-01-15 10:20:30.123456', '2024-01-15 10:20:30.5+02',
  '1 year 2 mons 3 days 04:05:06.789',
  '{1,NULL,3}', '{"a,b","c\"d",NULL,"NULL","",é}', '{{1,2},{3,4}}', '{1.10,NaN,-0.5}', '{"2024-01-15 10:20:30+00",infinity}', '{t,f}',
  'happy', '{sad,happy}', 7, 'domain text', '192.168.0.1/24', '(1.5,2)', B'1011', '<a>x</a>',
  '"key1"=>"val1", "key2"=>NULL', ARRAY['a=>1'::hstore, NULL], 'MiXeD Case', 'Top.Science.Astronomy', '978-0-393-04002-9',
  '(10.50,AAPL)', ARRAY['(1,A)'::holding, NULL, '(,"x y")'],
  ROW('(2,X)', 'k=>v', ARRAY['(3,Y)'::holding], '2024-01-15 10:20:30+02', 5, 'ok', 3, 1e100, '\x00ff', '{a,"b c"}')::position_t,
  '(1.5,"a,b")', '(1,x)'),
 (2, false, -32768, 0, -1, 'NaN', 'Infinity', 'NaN', -0.0001,
  E'quote" backslash\\ newline\n tab\t ctl\x01 emoji 🦀', '', '', '', ' ', '\x', '[]', '{}',
  '00000000-0000-0000-0000-000000000000',
  '0044-03-15 BC', '00:00:00', '00:00:00-03:00', '10000-01-01 00:00:00', '-infinity',
  '-1 days -00:00:01',
  '{}', '{}', '{{NULL}}', '{}', '{}', '{}',
  'sad', '{}', 1, '', '::1', '(0,0)', B'', '<b/>',
  '', '{}', '', '', '978-1-4028-9462-6',
  '(,"")', '{}',
  '(,,,,,,,,,)', '(,)', '(,)'),
 (3, NULL, NULL, NULL, NULL, '-Infinity', '-0', 'Infinity', NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'null',
  NULL,
  'infinity', '24:00:00', NULL, 'infinity', '1999-12-31 23:59:59.999999+00',
  '0',
  NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, true, 1, 1, 1, 3.4028235e38, 1e100, '-Infinity', 0,
  'x', 'x', 'x', 'x', 'x', '\xdeadbeef', '1.0e2', '1.0e2',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '1970-01-01', '12:00:00.5', '12:00:00.000001+14', '0001-01-01 00:00:00 BC', '2262-04-11 23:47:16.854775+00',
  '-178000000 years',
  '{-2147483648}', '{"\\\\"}', '{{{1}},{{2}}}', '{Infinity}', '{-infinity}', '{NULL}',
  'ok', '{NULL}', 2147483647, 'x', '10.0.0.0/8', '(-1,1e-5)', B'0', '<c/>',
  '"a\"b"=>"c\\d", "zz"=>"NULL", "b"=>""', '{NULL}', 'é', 'a', NULL,
  '(1,"a ""q"" \\ b, (c)")', ARRAY[NULL::holding],
  ROW(NULL, '"é"=>"🦀"', '{}', 'infinity', -1, 'sad', 1, 'NaN', '\x', '{}')::position_t,
  NULL, '(-2147483648,"")'),
 (5, false, 0, 0, 0, 1e-7, 1.2345678901234567e-300, 0.00000000000000000001, 99999999.9999,
  'x', 'x', 'x', 'x', 'x', '\x', '"s"', '"s"',
  '12345678-1234-1234-1234-123456789abc',
  '2000-01-01', '00:00:00.000001', '23:59:59+00', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00',
  '1 mon -1 days 00:00:00.000001',
  '{0}', '{" spaced "}', '{}', '{0.000}', '{}', '{}',
  'ok', '{ok,ok}', 1, 'x', '0.0.0.0/0', '(0,-0)', B'1', '<d/>',
  'a=>NULL', ARRAY['x=>y, y=>z'::hstore, ''], 'x', 'a.b', '978-0-393-04002-9',
  '(-0.01,x)', ARRAY['(1,A)'::holding, '(2,B)'],
  ROW('(,)', NULL, ARRAY[NULL::holding, '(1,"")'], NULL, NULL, NULL, NULL, 0.1, NULL, '{NULL}')::position_t,
  '(,)', NULL);
"#;
