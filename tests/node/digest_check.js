// A second, independent implementation of the receipt's response digest
// (gateway/audit/digest.py states the rule), in JavaScript: it queries the
// real gateway over mutual TLS with @grpc/grpc-js, parses the answer with
// protobufjs, re-encodes the PARSED message by the canonical rule and hashes
// it. The Python test compares the result with the receipt.
//
// usage: node digest_check.js CONFIG.json   (prints one JSON object)
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protobuf = require("protobufjs");

const MASK64 = (1n << 64n) - 1n;

function varint(value) {
  // value: BigInt; negative values as 64-bit two's complement (10 bytes).
  let v = BigInt.asUintN(64, value) & MASK64;
  const out = [];
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

function tag(number, wireType) {
  return varint(BigInt((number << 3) | wireType));
}

function lengthDelimited(number, bytes) {
  return Buffer.concat([tag(number, 2), varint(BigInt(bytes.length)), bytes]);
}

function toBigInt(value) {
  // protobufjs gives 64-bit integers as Long objects (or numbers when small).
  if (typeof value === "number") return BigInt(value);
  if (typeof value === "string") return BigInt(value);
  return BigInt(value.toString());
}

function scalarVarint(type, value) {
  switch (type) {
    case "bool":
      return value ? 1n : 0n;
    case "sint64": {
      const n = BigInt.asIntN(64, toBigInt(value));
      return BigInt.asUintN(64, (n << 1n) ^ (n >> 63n)); // zigzag
    }
    case "uint32":
      return BigInt(value >>> 0);
    case "int32":
    case "int64":
      return BigInt.asIntN(64, toBigInt(value));
    default:
      throw new Error(`type ${type} is not used by the response`);
  }
}

function isDefault(field, value) {
  if (field.resolvedType instanceof protobuf.Enum) return Number(value) === 0;
  if (field.type === "string") return value === "";
  if (field.type === "bool") return value === false;
  return toBigInt(value) === 0n;
}

function encodeScalar(field, value) {
  if (field.type === "string") {
    return lengthDelimited(field.id, Buffer.from(value, "utf8"));
  }
  const type = field.resolvedType instanceof protobuf.Enum ? "int32" : field.type;
  return Buffer.concat([tag(field.id, 0), varint(scalarVarint(type, value))]);
}

// The canonical encoding of a parsed message (rules 1-6 of gateway/audit/digest.py).
function canonical(type, message, skip) {
  const parts = [];
  const fields = type.fieldsArray.slice().sort((a, b) => a.id - b.id); // rule 1
  for (const field of fields) {
    if (skip && skip.has(field.id)) continue; // rule 2: the receipt
    field.resolve();
    const value = message[field.name];
    if (field.map) {
      // rule 5: entries sorted by the key's UTF-8 bytes, key and value always written
      const keys = Object.keys(value || {}).map((k) => [Buffer.from(k, "utf8"), k]);
      keys.sort((a, b) => Buffer.compare(a[0], b[0]));
      for (const [keyBytes, key] of keys) {
        const entry = Buffer.concat([
          lengthDelimited(1, keyBytes),
          lengthDelimited(2, canonical(field.resolvedType, value[key])),
        ]);
        parts.push(lengthDelimited(field.id, entry));
      }
    } else if (field.repeated) {
      for (const item of value || []) {
        if (!(field.resolvedType instanceof protobuf.Type)) {
          throw new Error("repeated scalars are not used by the response");
        }
        parts.push(lengthDelimited(field.id, canonical(field.resolvedType, item)));
      }
    } else if (field.resolvedType instanceof protobuf.Type) {
      // a singular message: written when set, even when empty (rule 3)
      if (value !== null && value !== undefined) {
        parts.push(lengthDelimited(field.id, canonical(field.resolvedType, value)));
      }
    } else if (field.partOf) {
      // a oneof member: written when it is the member set, even at its default
      if (message[field.partOf.name] === field.name) parts.push(encodeScalar(field, value));
    } else if (value !== undefined && value !== null && !isDefault(field, value)) {
      parts.push(encodeScalar(field, value)); // rule 3: defaults left out
    }
  }
  return Buffer.concat(parts);
}

function countMapEntries(response) {
  let entries = 0;
  for (const section of response.sections) {
    for (const dataset of section.datasets) {
      for (const record of dataset.records) entries += Object.keys(record.fields).length;
    }
  }
  return entries;
}

function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const root = new protobuf.Root();
  // The proto root is protos/ (the files import "credit/v1/..."), as for protoc -I protos.
  root.resolvePath = (_origin, target) => path.join(config.repo, "protos", target);
  root.loadSync("credit/v1/query.proto", { keepCase: true });
  root.resolveAll();
  const Request = root.lookupType("credit.v1.QueryRequest");
  const Response = root.lookupType("credit.v1.QueryResponse");
  const receiptField = Response.fields.receipt.id;

  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(config.ca),
    fs.readFileSync(config.key),
    fs.readFileSync(config.cert),
  );
  const client = new grpc.Client(config.address, credentials);
  const metadata = new grpc.Metadata();
  metadata.add("authorization", `Bearer ${config.token}`);
  const request = Request.create({
    request_id: config.request_id,
    subject: { type: config.subject_type, id: config.subject_id },
    purpose: config.purpose,
    mode: 1,
  });
  client.makeUnaryRequest(
    "/credit.v1.QueryService/Query",
    (msg) => Buffer.from(Request.encode(msg).finish()),
    (buf) => Response.decode(buf),
    request,
    metadata,
    { deadline: Date.now() + 30000 },
    (err, response) => {
      client.close();
      if (err) {
        console.error(`query failed: ${err.code} ${err.details}`);
        process.exit(3);
      }
      const canonicalBytes = canonical(Response, response, new Set([receiptField]));
      // What a JavaScript client gets by simply re-serialising: insertion-ordered maps.
      const plain = Response.toObject(response);
      delete plain.receipt;
      const naive = Buffer.from(Response.encode(Response.fromObject(plain)).finish());
      console.log(
        JSON.stringify({
          receipt_digest: Buffer.from(response.receipt.response_digest).toString("hex"),
          log_index: String(response.receipt.log_index),
          canonical_digest: crypto.createHash("sha256").update(canonicalBytes).digest("hex"),
          naive_digest: crypto.createHash("sha256").update(naive).digest("hex"),
          map_entries: countMapEntries(response),
        }),
      );
    },
  );
}

main();
