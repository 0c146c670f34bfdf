// Rules of this project for Redocly's linter (openapi/redocly.yaml), about what a generated SDK makes
// of the document.

/** Every JSON request or response body is a $ref to a named schema, so that an SDK names its model. */
function jsonBodiesNamed() {
  return {
    MediaTypesMap: {
      enter(map, ctx) {
        for (const [type, media] of Object.entries(map)) {
          if (!type.includes('json') || media?.schema === undefined) continue;
          if (typeof media.schema.$ref !== 'string') {
            ctx.report({ message: `the ${type} body is an inline schema: name it (a $ref to components.schemas)`, location: ctx.location.child([type, 'schema']) });
          }
        }
      },
    },
  };
}

/** A choice among strings is an `enum`, not anyOf of one-value enums (an SDK makes a class of each). */
function noSingleValueAnyOf() {
  const single = (s) => s !== null && typeof s === 'object' && ('const' in s || (Array.isArray(s.enum) && s.enum.length === 1));
  return {
    Schema: {
      enter(schema, ctx) {
        for (const key of ['anyOf', 'oneOf']) {
          const options = schema[key];
          if (Array.isArray(options) && options.length > 1 && options.every(single)) {
            ctx.report({ message: `${key} of single values: write one enum`, location: ctx.location.child(key) });
          }
        }
      },
    },
  };
}

export default function momPlugin() {
  return {
    id: 'mom',
    rules: { oas3: { 'json-bodies-named': jsonBodiesNamed, 'no-single-value-anyof': noSingleValueAnyOf } },
  };
}
