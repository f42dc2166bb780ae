// The Node.js example: detected by package.json, started with `npm start`, on $PORT.
const http = require("http");
const greeting = process.env.GREETING || "Hello";
http
  .createServer((req, res) => {
    res.setHeader("Content-Type", "text/plain; charset=utf-8");
    res.end(`${greeting} from Node.js ${process.version}\n`);
  })
  .listen(Number(process.env.PORT || 5000));
