/**
 * The API's contract as an `HttpApi`, built from the same Schemas that validate requests: it gives the
 * OpenAPI document (`/openapi.json`), the docs page (`/docs`) and the typed client. The routes themselves are
 * served by Router.ts; the client test calls every endpoint of a running service through this contract, so the
 * two cannot drift apart unnoticed.
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiClient from "@effect/platform/HttpApiClient"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as OpenApi from "@effect/platform/OpenApi"
import * as Schema from "effect/Schema"
import { ErrorBody } from "../Domain/ApiError.js"
import {
  FilterParams,
  NamesResponse,
  SeriesParams,
  SeriesResponse,
  SummaryResponse,
  TotalResponse
} from "../Domain/Query.js"

/** A query endpoint: every answer that is not a 200 has the error body; the status says which kind of failure. */
const query = <Name extends string, Path extends `/${string}`>(name: Name, path: Path, description: string) =>
  HttpApiEndpoint.get(name, path)
    .addError(ErrorBody.annotations({ description: "a parameter is not valid" }), { status: 400 })
    .addError(ErrorBody.annotations({ description: "the service is at capacity, or ClickHouse is unavailable" }), { status: 503 })
    .addError(ErrorBody.annotations({ description: "the query did not finish in time" }), { status: 504 })
    .addError(ErrorBody.annotations({ description: "ClickHouse rejected the query, or a bug" }), { status: 500 })
    .addError(ErrorBody.annotations({ description: "ClickHouse sent an unreadable answer" }), { status: 502 })
    .annotate(OpenApi.Description, description)

export const Ready = Schema.Struct({
  status: Schema.Literal("ready"),
  /** `remote` or `embedded`. */
  clickhouse: Schema.String,
  /** The server's origin (no credentials) or the embedded engine's directory, and the server's version. */
  backend: Schema.Struct({
    kind: Schema.String,
    url: Schema.optional(Schema.String),
    path: Schema.optional(Schema.String),
    version: Schema.optional(Schema.String)
  }),
  pool: Schema.Struct({ size: Schema.Int, inUse: Schema.Int, waiting: Schema.Int })
})
export const Alive = Schema.Struct({ status: Schema.Literal("ok") })

export class MetricsGroup extends HttpApiGroup.make("metrics")
  .add(
    query("total", "/api/metrics", "sum(value) over the filter: the grand total without parameters")
      .setUrlParams(FilterParams)
      .addSuccess(TotalResponse)
  )
  .add(
    query("names", "/api/metrics/names", "each metric's row count and its earliest and latest ts, sorted by name")
      .setUrlParams(FilterParams)
      .addSuccess(NamesResponse)
  )
  .add(
    query(
      "summary",
      "/api/metrics/summary",
      "count, sum, avg, min, max and nearest-rank p50, p90, p99 of each metric, sorted by name"
    )
      .setUrlParams(FilterParams)
      .addSuccess(SummaryResponse)
  )
  .add(
    query(
      "series",
      "/api/metrics/series",
      "one series per metric: buckets aligned to multiples of the interval since the Unix epoch, in UTC"
    )
      .setUrlParams(SeriesParams)
      .addSuccess(SeriesResponse)
  )
{}

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("alive", "/healthz").addSuccess(Alive))
  .add(
    HttpApiEndpoint.get("ready", "/readyz")
      .addSuccess(Ready)
      .addError(ErrorBody.annotations({ description: "ClickHouse does not answer" }), { status: 503 })
  )
{}

const decodeError = "#/components/schemas/HttpApiDecodeError"

/**
 * `HttpApi` declares its own decode error on every 400; this service answers a bad parameter with its own
 * error body instead, so the document leaves that one out.
 */
const ownErrorsOnly = (spec: Record<string, any>): Record<string, any> => {
  for (const operations of Object.values(spec.paths ?? {}) as Array<Record<string, any>>) {
    for (const operation of Object.values(operations)) {
      for (const [status, response] of Object.entries(operation.responses ?? {}) as Array<[string, Record<string, any>]>) {
        const media = response.content?.["application/json"]
        if (media?.schema?.$ref === decodeError) delete operation.responses[status]
        const anyOf = media?.schema?.anyOf as Array<Record<string, unknown>> | undefined
        if (anyOf === undefined) continue
        const own = anyOf.filter((schema) => schema.$ref !== decodeError)
        media.schema = own.length === 1 ? own[0] : { ...media.schema, anyOf: own }
        if (own.length < anyOf.length) response.description = "a parameter is not valid"
      }
    }
  }
  const schemas = spec.components?.schemas as Record<string, unknown> | undefined
  if (schemas !== undefined) {
    delete schemas.HttpApiDecodeError
    if (!JSON.stringify(spec).includes("#/components/schemas/Issue")) delete schemas.Issue
    if (!JSON.stringify(spec).includes("#/components/schemas/PropertyKey")) delete schemas.PropertyKey
  }
  return spec
}

export class Api extends HttpApi.make("analytics-api")
  .add(MetricsGroup)
  .add(HealthGroup)
  .annotate(OpenApi.Title, "analytics-api")
  .annotate(OpenApi.Version, "1")
  .annotate(OpenApi.Transform, ownErrorsOnly)
  .annotate(
    OpenApi.Description,
    "Analytics over ClickHouse: every caller gets the exact number. Windows are [from, to); every timestamp in an " +
      "answer is RFC 3339 UTC. Errors are {\"error\": {\"code\", \"message\"}}."
  )
{}

/** The OpenAPI 3.1 document of the API, generated from the Schemas. */
export const openApi = OpenApi.fromApi(Api)

/** A typed client of a running service: `client.metrics.series({ urlParams: { interval: 3600 } })`. */
export const client = (baseUrl: string) => HttpApiClient.make(Api, { baseUrl })
