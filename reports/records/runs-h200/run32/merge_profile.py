# Merges a freshly calibrated profile with the shipped one's fields calibrate does not write
# (pool_slack, pool_slack_fraction, interconnect), by text.
import re, sys
cal, shipped, out = sys.argv[1:4]
c = open(cal).read()
s = open(shipped).read()
def field(name, text):
    m = re.search(r'^    ' + name + r': .*$', text, re.M)
    return m.group(0) if m else None
for name in ['pool_slack', 'pool_slack_fraction']:
    c = re.sub(r'^    ' + name + r': .*$', field(name, s), c, flags=re.M)
i = s.index('    interconnect: Some((')
j = s.index('\n    )),\n', i) + len('\n    )),\n')
block = s[i:j]
k = c.rstrip().rindex(')')
c = c[:k] + block + c[k:]
open(out, 'w').write(c)
