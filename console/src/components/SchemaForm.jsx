// Form fields generated from a task type's params JSON Schema. Values are
// sent as typed; nothing is validated here: the API's own messages come back
// and are shown next to the field they name (params.<name>).

export function paramFields(schema) {
  const properties = schema?.properties || {};
  const required = new Set(schema?.required || []);
  return Object.entries(properties).map(([name, prop]) => ({ name, prop, required: required.has(name) }));
}

// The params object to send: typed values of the filled-in fields, or the
// JSON of the free-form editor when the schema lists no properties.
export function paramsFrom(schema, values) {
  const fields = paramFields(schema);
  if (!fields.length) {
    const raw = (values.__json ?? "").trim();
    if (!raw) return {};
    try {
      return JSON.parse(raw);
    } catch (e) {
      throw Object.assign(new Error(`params: not valid JSON (${e.message})`), { field: "params" });
    }
  }
  const params = {};
  for (const { name, prop } of fields) {
    const raw = values[name];
    if (raw === undefined || raw === "") continue;
    params[name] = convert(prop, raw, name);
  }
  return params;
}

function convert(prop, raw, name) {
  switch (prop.type) {
    case "integer":
    case "number": {
      const n = Number(raw);
      return raw.trim() !== "" && Number.isFinite(n) ? n : raw; // the API names what is wrong
    }
    case "boolean":
      return Boolean(raw);
    case "string":
      return raw;
    default:
      try {
        return JSON.parse(raw);
      } catch (e) {
        throw Object.assign(new Error(`params.${name}: not valid JSON (${e.message})`), { field: `params.${name}` });
      }
  }
}

export function SchemaFields({ schema, values, onChange, errors }) {
  const fields = paramFields(schema);
  if (!fields.length) {
    return (
      <label class="field">
        <span>params (JSON)</span>
        <textarea
          name="params"
          aria-invalid={invalid(errors, "params")}
          rows="3"
          placeholder='{"key": "value"}'
          value={values.__json ?? ""}
          onInput={(e) => onChange("__json", e.currentTarget.value)}
        />
        <FieldError error={errors.params} field="params" />
      </label>
    );
  }
  return fields.map(({ name, prop, required }) => {
    const field = `params.${name}`;
    const label = (
      <span>
        {name}
        {required ? <b class="req"> *</b> : null}
        {prop.description ? <small> — {prop.description}</small> : null}
      </span>
    );
    const common = {
      name: field,
      "aria-invalid": invalid(errors, field),
      onInput: (e) => onChange(name, prop.type === "boolean" ? e.currentTarget.checked : e.currentTarget.value),
    };
    let input;
    if (prop.type === "boolean") {
      input = <input type="checkbox" checked={Boolean(values[name])} {...common} />;
    } else if (prop.enum) {
      input = (
        <select value={values[name] ?? ""} {...common} onChange={common.onInput}>
          <option value="">–</option>
          {prop.enum.map((v) => (
            <option value={v} key={v}>{String(v)}</option>
          ))}
        </select>
      );
    } else if (prop.type === "string" && !(prop.maxLength && prop.maxLength <= 200)) {
      input = <textarea rows="3" value={values[name] ?? ""} {...common} />;
    } else if (prop.type === "integer" || prop.type === "number") {
      const hint = [prop.minimum != null && `≥ ${prop.minimum}`, prop.maximum != null && `≤ ${prop.maximum}`];
      input = <input type="text" inputmode="numeric" placeholder={hint.filter(Boolean).join(", ")} value={values[name] ?? ""} {...common} />;
    } else if (prop.type === "string") {
      input = <input type="text" value={values[name] ?? ""} {...common} />;
    } else {
      input = <textarea rows="2" placeholder="JSON" value={values[name] ?? ""} {...common} />;
    }
    return (
      <label class="field" key={name}>
        {label}
        {input}
        <FieldError error={errors[field]} field={field} />
      </label>
    );
  });
}

// Shows an API error where it belongs: next to the form's fields it names
// (google.rpc.BadRequest field violations), else on top of the form.
export function showError(err, formFields, setErrors, setFormError) {
  const known = new Set(formFields);
  const placed = Object.fromEntries(Object.entries(err.fields || {}).filter(([f]) => known.has(f)));
  setErrors(placed);
  if (!Object.keys(placed).length) setFormError(err);
}

// aria-invalid for an input whose field the API refused.
export const invalid = (errors, field) => (errors[field] ? "true" : undefined);

export function FieldError({ error, field }) {
  return error ? (
    <div class="field-error" role="alert" data-field={field}>
      {error}
    </div>
  ) : null;
}
