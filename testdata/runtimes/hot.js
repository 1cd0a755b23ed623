// A hot JS function for the perf-map test: node --perf-basic-prof hot.js SECONDS
function hotLoop(n) {
  let x = 0;
  for (let i = 0; i < n; i++) { x = (x * 31 + i) % 1000003; }
  return x;
}
const end = Date.now() + 1000 * Number(process.argv[2] || 2);
let s = 0;
while (Date.now() < end) { s += hotLoop(100000); }
console.log(s > 0 ? "ok" : "no");
